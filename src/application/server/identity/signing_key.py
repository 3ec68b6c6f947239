"""The server's signing key, one for every replica: created once, kept sealed in the store.

The first replica to start creates the key (or imports `<state_dir>/signing.key`, the
file servers before schema version 4 kept) and adds it with `add_if_absent`; a replica
racing it loses that insert and reads the winner's key, so all replicas sign with the key
that agents fetched from any of them (docs/server.md §7.4).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from application.server.ports.services import SecretCipher, ServerClock
from application.server.ports.store import Store

__all__ = ["SIGNING_KEY_SECRET", "SigningKeyOrigin", "provision_signing_seed"]

#: The `server_secrets` row of the Ed25519 seed.
SIGNING_KEY_SECRET = "signing-key"  # noqa: S105  (a row name, not a secret)
_SEED_BYTES = 32


class SigningKeyOrigin(StrEnum):
    #: A fresh key: agents fetch it at their next start.
    CREATED = "created"
    #: The state dir's `signing.key`, now in the store; the file is not read again.
    IMPORTED = "imported"
    #: The store's key, created or imported by this or another replica before.
    STORED = "stored"


def provision_signing_seed(
    store: Store,
    cipher: SecretCipher,
    clock: ServerClock,
    *,
    legacy_seed: Callable[[], bytes | None],
    random_bytes: Callable[[int], bytes],
) -> tuple[bytes, SigningKeyOrigin]:
    """The seed every replica signs with, and where it came from.

    `legacy_seed` is asked only while the store holds no key; `SecretUnreadable` (from
    `cipher`) means this replica's key-encryption key is not the one that sealed it.
    """
    with store.read() as session:
        sealed = session.secrets.get(SIGNING_KEY_SECRET)
    if sealed is None:
        legacy = legacy_seed()
        seed = legacy if legacy is not None else random_bytes(_SEED_BYTES)
        with store.write() as session:
            won = session.secrets.add_if_absent(
                SIGNING_KEY_SECRET, cipher.seal(SIGNING_KEY_SECRET, seed), clock.now()
            )
        if won:
            return seed, SigningKeyOrigin.CREATED if legacy is None else SigningKeyOrigin.IMPORTED
        with store.read() as session:
            sealed = session.secrets.get(SIGNING_KEY_SECRET)
        if sealed is None:  # pragma: no cover - a key is never deleted
            raise RuntimeError("the signing key vanished from the store while being created")
    return cipher.open(SIGNING_KEY_SECRET, sealed), SigningKeyOrigin.STORED
