"""Ed25519 signature checks for execution tokens, with `cryptography`.

The server publishes its raw 32-byte public key as hex (docs/protocol.md §3.1); the
agent loads it once at startup. An operator may pin the key in `[server].public_key`, so
a rogue or compromised server URL cannot hand out a key of its own and sign arbitrary
jobs (dbward 0.2 trusts whatever key it is first given, §16.10).
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.agent.errors import TokenVerificationError
from domain.shared.errors import ConfigError

_KEY_BYTES = 32

# Edwards25519 constants, for checking that a key is a point on the curve.
_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P


def _is_curve_point(key: bytes) -> bool:
    """True if the compressed point decompresses, as ed25519-dalek's `from_bytes` demands.

    OpenSSL (behind `cryptography`) accepts any 32 bytes as a public key and only fails
    later, at verification; dbward 0.2 refuses such a key at startup, and so do we:
    x^2 = (y^2 - 1) / (d*y^2 + 1) must have a square root mod p.
    """
    y = (int.from_bytes(key, "little") & ((1 << 255) - 1)) % _P
    y2 = y * y % _P
    x2 = (y2 - 1) * pow(_D * y2 + 1, -1, _P) % _P
    return x2 == 0 or pow(x2, (_P - 1) // 2, _P) == 1


def decode_public_key(hex_key: str) -> bytes:
    """Hex-decode a 32-byte Ed25519 public key, or say exactly what is wrong with it."""
    try:
        raw = bytes.fromhex(hex_key.strip())
    except ValueError:
        raise TokenVerificationError("invalid public key: not hex") from None
    if len(raw) != _KEY_BYTES:
        raise TokenVerificationError(
            f"invalid public key: expected {_KEY_BYTES} bytes, got {len(raw)}"
        )
    if not _is_curve_point(raw):
        raise TokenVerificationError("invalid public key: not a valid Ed25519 point")
    return raw


class Ed25519Verifier:
    """Implements `application.agent.ports.SignatureVerifier`."""

    def __init__(self, pinned_hex: str | None = None) -> None:
        self._pinned: bytes | None = None
        if pinned_hex is not None:
            try:
                self._pinned = decode_public_key(pinned_hex)
            except TokenVerificationError as exc:
                raise ConfigError(f"[server].public_key: {exc.reason}") from None
        self._key: Ed25519PublicKey | None = None

    def load_public_key(self, hex_key: str) -> None:
        raw = decode_public_key(hex_key)
        if self._pinned is not None and not hmac.compare_digest(raw, self._pinned):
            raise TokenVerificationError(
                "public key mismatch: the server's key does not match [server].public_key"
            )
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        if self._key is None:
            raise TokenVerificationError("no server public key loaded")
        try:
            self._key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True
