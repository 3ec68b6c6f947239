"""The server's Ed25519 signing key, with `cryptography` (docs/protocol.md §3.1, §4.1).

The key lives in the store, sealed with the key-encryption key, so every replica sharing
the store signs with the one key agents fetched (docs/server.md §7.4;
`application.server.identity.signing_key` creates or imports it). Servers before that kept
it in `<state_dir>/signing.key`: the 32-byte Ed25519 seed, raw, as dbward 0.2 stores
it. `read_legacy_seed` reads such a file once, for the import; a file others may read, or
whose size is not 32 bytes, stops the server with a message saying what to do, because a
truncated key would silently become a new identity that no running agent trusts.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.crypto.key_files import read_private_file

__all__ = ["SIGNING_KEY_FILE", "Ed25519Signer", "SigningKeyError", "read_legacy_seed"]

SIGNING_KEY_FILE = "signing.key"
SEED_BYTES = 32


class SigningKeyError(RuntimeError):
    """The signing key file cannot be used; the message names the file and the fix."""


class Ed25519Signer:
    """Implements `ExecutionTokenSigner` and `AuditSigner` (`application.server.ports.services`)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public_hex = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

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


def read_legacy_seed(state_dir: Path) -> bytes | None:
    """The seed in `<state_dir>/signing.key`; None when there is no such file."""
    path = state_dir / SIGNING_KEY_FILE
    if not path.exists():
        return None
    seed = read_private_file(path, "signing key")
    if len(seed) != SEED_BYTES:
        raise SigningKeyError(
            f"{path}: the signing key must be exactly {SEED_BYTES} bytes, found "
            f"{len(seed)}; restore it from a backup, or remove it to have a new key created "
            "(a new key means every agent must be restarted to fetch it)"
        )
    return seed
