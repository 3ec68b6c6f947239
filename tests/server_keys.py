"""The server's keys as tests assemble them: one key-encryption key, the store's signer."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from adapters.crypto.ed25519_signer import Ed25519Signer
from adapters.crypto.key_encryption import AesGcmSecretCipher
from application.server.identity.signing_key import provision_signing_seed
from application.server.ports.store import Store

#: The key-encryption key of every test server assembled by hand.
TEST_KEK = bytes(range(32))


class _Now:
    def now(self) -> datetime:
        return datetime.now(UTC)


def kek_cipher() -> AesGcmSecretCipher:
    return AesGcmSecretCipher(TEST_KEK)


def signer_from_store(store: Store) -> Ed25519Signer:
    """The store's signing key, created on first use, as `dbward server` provisions it."""
    seed, _origin = provision_signing_seed(
        store, kek_cipher(), _Now(), legacy_seed=lambda: None, random_bytes=os.urandom
    )
    return Ed25519Signer(seed)
