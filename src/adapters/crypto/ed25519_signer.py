"""The server's Ed25519 signing key, with `cryptography` (docs/protocol.md §3.1, §4.1).

The key is `<state_dir>/signing.key`: the 32-byte Ed25519 seed, raw, as the reference
stores it, so a state dir moves between dbward implementations. It is created on first
start with `O_CREAT | O_EXCL` and mode 0600 (two servers starting at once cannot both
write one; the loser reads the winner's). A key file that others may read, or whose size
is not 32 bytes, stops the server with a message saying what to do: a leaked key lets
anyone sign jobs every agent will run, and a truncated one would silently become a new
identity that no running agent trusts.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["SIGNING_KEY_FILE", "Ed25519Signer", "SigningKeyError"]

SIGNING_KEY_FILE = "signing.key"
_SEED_BYTES = 32


class SigningKeyError(RuntimeError):
    """The signing key file cannot be used; the message names the file and the fix."""


class Ed25519Signer:
    """Implements `ExecutionTokenSigner` and `AuditSigner` (`application.server.ports.services`)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != _SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {_SEED_BYTES} bytes, got {len(seed)}")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public_hex = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    @classmethod
    def load_or_create(cls, state_dir: Path) -> Ed25519Signer:
        """The key in `state_dir/signing.key`, generated (mode 0600) when there is none."""
        path = state_dir / SIGNING_KEY_FILE
        state_dir.mkdir(parents=True, exist_ok=True)
        seed = _create(path)
        if seed is None:
            seed = _load(path)
        return cls(seed)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's signature of `message` (audit anchors)."""
        try:
            self._key.public_key().verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def public_key_hex(self) -> str:
        return self._public_hex

    def __repr__(self) -> str:
        return f"Ed25519Signer(public_key={self._public_hex})"


def _create(path: Path) -> bytes | None:
    """Write a fresh seed with O_EXCL; None when the file exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    seed = os.urandom(_SEED_BYTES)
    try:
        written = os.write(fd, seed)
        if written != _SEED_BYTES:
            raise SigningKeyError(f"{path}: short write while creating the signing key")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    return seed


def _load(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot open the signing key: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"{path}: the signing key must be a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningKeyError(
                f"{path}: the signing key is accessible to group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
            )
        if info.st_size != _SEED_BYTES:
            raise SigningKeyError(
                f"{path}: the signing key must be exactly {_SEED_BYTES} bytes, found "
                f"{info.st_size}; restore it from a backup (a new key means every agent "
                "must be restarted to fetch it)"
            )
        seed = os.read(fd, _SEED_BYTES + 1)
    finally:
        os.close(fd)
    if len(seed) != _SEED_BYTES:
        raise SigningKeyError(f"{path}: the signing key changed size while being read")
    return seed
