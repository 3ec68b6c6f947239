"""The key-encryption key's sources and the AES-GCM cipher that seals the store's secrets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from adapters.crypto.key_encryption import (
    GENERATED_KEK_FILE,
    KEK_ENV,
    AesGcmSecretCipher,
    KeyEncryptionKeyError,
    load_key_encryption_key,
)
from adapters.crypto.key_files import PrivateFileError
from application.server.ports.services import SecretUnreadable

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def load(tmp_path: Path, environ: dict[str, str], key_file: Path | None = None, *, shared: bool):  # type: ignore[no-untyped-def]
    return load_key_encryption_key(environ, key_file, shared_store=shared, state_dir=tmp_path)


class TestCipher:
    def test_sealed_bytes_open_to_the_plaintext_and_do_not_contain_it(self) -> None:
        cipher = AesGcmSecretCipher(KEY)
        sealed = cipher.seal("signing-key", b"seed" * 8)
        assert b"seed" not in sealed
        assert cipher.open("signing-key", sealed) == b"seed" * 8
        assert cipher.seal("signing-key", b"x") != cipher.seal("signing-key", b"x")  # nonces

    def test_another_key_cannot_open_and_says_every_replica_needs_the_same(self) -> None:
        sealed = AesGcmSecretCipher(KEY).seal("signing-key", b"seed")
        with pytest.raises(SecretUnreadable, match="every replica sharing the store"):
            AesGcmSecretCipher(bytes(32)).open("signing-key", sealed)

    def test_a_value_moved_to_another_secrets_row_does_not_open(self) -> None:
        cipher = AesGcmSecretCipher(KEY)
        with pytest.raises(SecretUnreadable, match="token:bootstrap-admin"):
            cipher.open("token:bootstrap-admin", cipher.seal("signing-key", b"seed"))


class TestKeySources:
    def test_the_environment_gives_the_key_as_base64_urlsafe_base64_or_hex(
        self, tmp_path: Path
    ) -> None:
        urlsafe = base64.urlsafe_b64encode(KEY).decode()
        for text in (KEY_B64, urlsafe, KEY.hex(), f"  {KEY_B64}\n"):
            assert load(tmp_path, {KEK_ENV: text}, shared=True) == KEY

    def test_a_key_of_the_wrong_size_is_refused_naming_the_source(self, tmp_path: Path) -> None:
        with pytest.raises(KeyEncryptionKeyError, match=f"{KEK_ENV}: .*32 bytes"):
            load(tmp_path, {KEK_ENV: base64.b64encode(b"short").decode()}, shared=True)

    def test_a_key_file_must_be_owner_only(self, tmp_path: Path) -> None:
        path = tmp_path / "kek"
        path.write_text(KEY_B64)
        path.chmod(0o600)
        assert load(tmp_path, {}, path, shared=True) == KEY
        path.chmod(0o644)
        with pytest.raises(PrivateFileError, match="chmod 600"):
            load(tmp_path, {}, path, shared=True)

    def test_both_sources_at_once_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(KeyEncryptionKeyError, match="keep one"):
            load(tmp_path, {KEK_ENV: KEY_B64}, tmp_path / "kek", shared=True)

    def test_a_shared_store_without_a_key_refuses_saying_how_to_set_one(
        self, tmp_path: Path
    ) -> None:
        with pytest.raises(KeyEncryptionKeyError, match=f"PostgreSQL.*{KEK_ENV}"):
            load(tmp_path, {}, shared=True)
        assert not (tmp_path / GENERATED_KEK_FILE).exists()

    def test_a_sqlite_store_generates_one_key_in_the_state_dir(self, tmp_path: Path) -> None:
        first = load(tmp_path, {}, shared=False)
        assert (tmp_path / GENERATED_KEK_FILE).stat().st_mode & 0o777 == 0o600
        assert load(tmp_path, {}, shared=False) == first and len(first) == 32
