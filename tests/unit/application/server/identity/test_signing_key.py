"""One signing key for every replica: created once in the store, or imported from a file."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import cast

import pytest

from adapters.crypto.ed25519_signer import SigningKeyError, read_legacy_seed
from adapters.crypto.key_encryption import AesGcmSecretCipher
from adapters.crypto.key_files import PrivateFileError
from application.server.identity.signing_key import (
    SIGNING_KEY_SECRET,
    SigningKeyOrigin,
    provision_signing_seed,
)
from application.server.ports.services import SecretUnreadable
from application.server.ports.store import Store
from tests.fakes.clock import FakeClock
from tests.fakes.identity_store import FakeStore

CIPHER = AesGcmSecretCipher(bytes(range(32)))


def provision(
    store: FakeStore, legacy: bytes | None = None, cipher: AesGcmSecretCipher = CIPHER
) -> tuple[bytes, SigningKeyOrigin]:
    counter = itertools.count(1)
    return provision_signing_seed(
        cast(Store, store),
        cipher,
        FakeClock(),
        legacy_seed=lambda: legacy,
        random_bytes=lambda n: bytes([next(counter)]) * n,
    )


def test_the_first_start_creates_a_key_that_later_starts_read() -> None:
    store = FakeStore()
    seed, origin = provision(store)
    assert origin is SigningKeyOrigin.CREATED and len(seed) == 32
    assert seed not in store.state.secrets[SIGNING_KEY_SECRET]  # sealed, never in clear
    assert provision(store, legacy=b"\x09" * 32) == (seed, SigningKeyOrigin.STORED)


def test_a_legacy_key_file_is_imported_once() -> None:
    store = FakeStore()
    assert provision(store, legacy=b"\x07" * 32) == (b"\x07" * 32, SigningKeyOrigin.IMPORTED)
    assert provision(store) == (b"\x07" * 32, SigningKeyOrigin.STORED)


def test_a_replica_losing_the_creation_race_signs_with_the_winners_key() -> None:
    store = FakeStore()
    winner = b"\x05" * 32

    class RacingStore(FakeStore):
        """Another replica adds its key between this one's read and its insert."""

        def __init__(self) -> None:
            self.state = store.state
            self.audit_fails = False
            self.writes = self.rollbacks = 0
            self._raced = False

        def write(self):  # type: ignore[no-untyped-def]
            if not self._raced:
                self._raced = True
                self.state.secrets[SIGNING_KEY_SECRET] = CIPHER.seal(SIGNING_KEY_SECRET, winner)
            return super().write()

    seed, origin = provision(RacingStore())
    assert (seed, origin) == (winner, SigningKeyOrigin.STORED)


def test_a_replica_with_another_key_encryption_key_cannot_open_the_key() -> None:
    store = FakeStore()
    provision(store)
    with pytest.raises(SecretUnreadable):
        provision(store, cipher=AesGcmSecretCipher(bytes(32)))


def test_a_legacy_key_file_is_read_only_when_owner_only_and_32_bytes(tmp_path: Path) -> None:
    assert read_legacy_seed(tmp_path) is None
    key = tmp_path / "signing.key"
    key.write_bytes(b"\x01" * 32)
    key.chmod(0o600)
    assert read_legacy_seed(tmp_path) == b"\x01" * 32
    key.chmod(0o640)
    with pytest.raises(PrivateFileError, match="chmod 600"):
        read_legacy_seed(tmp_path)
    key.chmod(0o600)
    key.write_bytes(b"short")
    with pytest.raises(SigningKeyError, match="exactly 32 bytes, found 5"):
        read_legacy_seed(tmp_path)
