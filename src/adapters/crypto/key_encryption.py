"""The key-encryption key (KEK) and the AES-GCM cipher that seals the store's secrets.

The signing key and the bootstrap tokens live in the store, sealed (docs/server.md §7.4).
The KEK that opens them never does; it comes, in this order, from:

1. `DBWARD_KEY_ENCRYPTION_KEY` in the server's environment, or
2. the file named by `[signing] key_encryption_key_file` (owner-only, like any key file);
3. with a SQLite store only: `<state_dir>/key-encryption.key`, generated on first start.
   A SQLite store serves one process, whose state dir already holds the store itself.

A PostgreSQL store is shared by replicas: each one needs the same KEK from (1) or (2), and
a replica without one refuses to start, saying so. The key is 32 random bytes written as
base64 (`openssl rand -base64 32`) or as 64 hex characters.

Sealed format: version byte 1, a 12-byte random nonce, then AES-256-GCM's ciphertext and
tag, with the secret's name as associated data (a value moved to another row fails).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.crypto.key_files import read_private_file
from application.server.ports.services import SecretUnreadable

__all__ = [
    "GENERATED_KEK_FILE",
    "KEK_ENV",
    "AesGcmSecretCipher",
    "KeyEncryptionKeyError",
    "load_key_encryption_key",
]

KEK_ENV = "DBWARD_KEY_ENCRYPTION_KEY"
GENERATED_KEK_FILE = "key-encryption.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"
_FIX = (
    f"set {KEK_ENV} or [signing] key_encryption_key_file to the same 32-byte key (base64, "
    "e.g. from `openssl rand -base64 32`) on every replica"
)


class KeyEncryptionKeyError(RuntimeError):
    """No usable key-encryption key; the message names the source and the fix."""


class AesGcmSecretCipher:
    """Implements `application.server.ports.services.SecretCipher`."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ValueError(f"the key-encryption key is {_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, name.encode())

    def open(self, name: str, sealed: bytes) -> bytes:
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES:
            raise SecretUnreadable(
                f"the stored secret {name!r} is not in a format this dbward reads"
            )
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, name.encode())
        except InvalidTag:
            raise SecretUnreadable(
                f"the stored secret {name!r} does not open with this server's key-encryption "
                f"key: every replica sharing the store must use the key that sealed it ({_FIX})"
            ) from None

    def __repr__(self) -> str:
        return "AesGcmSecretCipher(<key hidden>)"


def load_key_encryption_key(
    environ: Mapping[str, str],
    key_file: Path | None,
    *,
    shared_store: bool,
    state_dir: Path,
) -> bytes:
    """The KEK from the environment, the configured file or (SQLite only) the state dir."""
    from_env = environ.get(KEK_ENV, "").strip()
    if from_env and key_file is not None:
        raise KeyEncryptionKeyError(
            f"both {KEK_ENV} and [signing] key_encryption_key_file are set; keep one"
        )
    if from_env:
        return _parse(from_env, KEK_ENV)
    if key_file is not None:
        return _parse(read_private_file(key_file, "key-encryption key").decode(), str(key_file))
    if shared_store:
        raise KeyEncryptionKeyError(
            "the store is PostgreSQL, shared by server replicas, and the signing key is kept "
            f"in it sealed with a key-encryption key, but none is configured: {_FIX}"
        )
    path = state_dir / GENERATED_KEK_FILE
    _create_generated(path)
    return _parse(read_private_file(path, "key-encryption key").decode(), str(path))


def _parse(text: str, source: str) -> bytes:
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 2 * _KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    with contextlib.suppress(binascii.Error, ValueError):
        candidates.append(base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True))
    for key in candidates:
        if len(key) == _KEY_BYTES:
            return key
    raise KeyEncryptionKeyError(
        f"{source}: the key-encryption key must be {_KEY_BYTES} bytes written as base64 "
        "(44 characters, e.g. from `openssl rand -base64 32`) or as 64 hex characters"
    )


def _create_generated(path: Path) -> None:
    """Write a fresh key with O_EXCL and mode 0600; nothing when the file exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, base64.b64encode(os.urandom(_KEY_BYTES)) + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
