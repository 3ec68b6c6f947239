"""What replicas share through the store (docs/server.md §7.4): the sealed secrets and the
result contents. The same behaviour from the fakes / local files, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from adapters.files.result_store import LocalResultStore
from adapters.store.result_contents import StoreResultContents
from adapters.store.sql_store import SqlSession, SqlStore
from application.server.ports.services import ResultContentStore, ResultContentTooLarge
from application.server.ports.store import SecretRepository
from tests.fakes.identity_store import FakeSecretRepository, IdentityState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def secrets(connection: Connection | None) -> SecretRepository:
    if connection is None:
        return FakeSecretRepository(IdentityState())
    return SqlSession(connection).secrets


@pytest.fixture
def contents(store_engine: Engine | None, tmp_path: Path) -> ResultContentStore:
    """The store's table on SQL backends; the local files stand in for "fake"."""
    if store_engine is None:
        return LocalResultStore(tmp_path / "results", max_bytes=16)
    return StoreResultContents(store_engine, max_bytes=16)


def key() -> str:
    return f"{uuid.uuid4()}/{uuid.uuid4()}/{uuid.uuid4().hex}"


class TestSecrets:
    def test_the_first_value_wins_and_later_adds_change_nothing(
        self, secrets: SecretRepository
    ) -> None:
        assert secrets.get("signing-key") is None
        assert secrets.add_if_absent("signing-key", b"\x00first\xff", NOW) is True
        assert secrets.add_if_absent("signing-key", b"second", NOW) is False
        assert secrets.get("signing-key") == b"\x00first\xff"

    def test_put_replaces_or_creates(self, secrets: SecretRepository) -> None:
        secrets.put("token:bootstrap-admin", b"old", NOW)
        secrets.put("token:bootstrap-admin", b"new", NOW)
        assert secrets.get("token:bootstrap-admin") == b"new"
        assert secrets.get("token:bootstrap-agent") is None


class TestResultContents:
    def test_put_get_replace_delete(self, contents: ResultContentStore) -> None:
        name = key()
        assert contents.get(name) is None
        contents.put(name, b'{"rows":[]}')
        assert contents.get(name) == b'{"rows":[]}'
        contents.put(name, b"\x00binary\xff")
        assert contents.get(name) == b"\x00binary\xff"
        contents.delete(name)
        assert contents.get(name) is None
        contents.delete(name)  # a missing key is no error

    def test_content_above_the_limit_is_refused_before_anything_is_written(
        self, contents: ResultContentStore
    ) -> None:
        name = key()
        with pytest.raises(ResultContentTooLarge, match="exceeds limit 16"):
            contents.put(name, b"x" * 17)
        assert contents.get(name) is None


@pytest.mark.integration
def test_racing_replicas_store_exactly_one_signing_key(
    sql_store_engine: Engine,
) -> None:
    """Two stores on one database (two replicas) add the key at once: one wins, both read it."""
    store_engine = sql_store_engine
    name = f"race-{uuid.uuid4().hex}"
    barrier = threading.Barrier(2)
    won: list[bool] = []

    def add(value: bytes) -> None:
        store = SqlStore(store_engine)
        barrier.wait(10)
        with store.write() as session:
            won.append(session.secrets.add_if_absent(name, value, NOW))

    threads = [threading.Thread(target=add, args=(v,)) for v in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won) == [False, True]
    with SqlStore(store_engine).read() as session:
        assert session.secrets.get(name) in (b"a", b"b")
