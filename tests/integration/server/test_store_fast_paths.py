"""The store's parts of the lean request path, on a real SQLite store: identity writes
tell the authentication cache, small results live in the store instead of files, and a
session's audit appends read the chain head once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event

from adapters.files.result_store import LocalResultStore
from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from adapters.store.result_contents import SmallResultsInStore, StoreResultContents
from adapters.store.sql_store import SqlStore
from application.server.ports.identity import UserRecord
from domain.server.api_tokens import SubjectType, TokenRecord, TokenStatus
from domain.server.audit import AuditEvent

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def changes(tmp_path: Path) -> Iterator[tuple[SqlStore, list[None]]]:
    calls: list[None] = []
    engine = create_store_engine(f"sqlite:///{tmp_path / 'dbward.db'}")
    migrate(engine)
    store = SqlStore(engine, on_identity_change=lambda: calls.append(None))
    yield store, calls
    store.close()


def _token() -> TokenRecord:
    return TokenRecord(
        id="t1",
        subject_type=SubjectType.USER,
        subject_id="alice",
        token_hash="ab" * 32,
        token_prefix="dbw_abcd",
        scope_ceiling=None,
        name=None,
        status=TokenStatus.ACTIVE,
        provisioning_kind=None,
        expires_at=None,
        created_at=NOW,
    )


class TestIdentityChanges:
    def test_a_committed_revocation_tells_the_cache(
        self, changes: tuple[SqlStore, list[None]]
    ) -> None:
        store, calls = changes
        with store.write() as session:
            session.identity.add_user(UserRecord("alice", ("requester",), NOW, NOW))
            session.identity.add_token(_token())
        calls.clear()
        with store.write() as session:
            assert session.identity.revoke_token("t1", NOW)
        assert calls == [None]

    def test_a_rolled_back_change_and_bookkeeping_writes_do_not(
        self, changes: tuple[SqlStore, list[None]]
    ) -> None:
        store, calls = changes
        with store.write() as session:
            session.identity.add_user(UserRecord("alice", ("requester",), NOW, NOW))
        calls.clear()
        with store.write() as session:
            session.identity.touch_user("alice", NOW)
        with pytest.raises(RuntimeError), store.write() as session:
            session.identity.set_roles("alice", ("admin",), NOW)
            raise RuntimeError("rolled back")
        assert calls == []


class TestSmallResultsInStore:
    @pytest.fixture
    def tiers(self, tmp_path: Path) -> Iterator[tuple[SmallResultsInStore, Path]]:
        engine = create_store_engine(f"sqlite:///{tmp_path / 'dbward.db'}")
        migrate(engine)
        files = tmp_path / "results"
        yield (
            SmallResultsInStore(
                StoreResultContents(engine, 8), LocalResultStore(files, 64), threshold=8
            ),
            files,
        )
        engine.dispose()

    def test_a_small_result_writes_no_file(self, tiers: tuple[SmallResultsInStore, Path]) -> None:
        contents, files = tiers
        contents.put("r/e/a", b"12345678")
        assert contents.get("r/e/a") == b"12345678"
        assert not files.exists() or not any(p.is_file() for p in files.rglob("*"))

    def test_a_large_result_goes_to_a_file_and_reads_back(
        self, tiers: tuple[SmallResultsInStore, Path]
    ) -> None:
        contents, files = tiers
        contents.put("r/e/b", b"123456789")
        assert (files / "r" / "e" / "b").read_bytes() == b"123456789"
        assert contents.get("r/e/b") == b"123456789"
        assert contents.max_bytes == 64

    def test_writes_queue_with_the_stores_other_writers(self, tmp_path: Path) -> None:
        engine = create_store_engine(f"sqlite:///{tmp_path / 'dbward.db'}")
        migrate(engine)
        store = SqlStore(engine)
        opened: list[str] = []

        @contextmanager
        def transaction() -> Iterator[Connection]:
            opened.append("write")
            with store.transaction() as conn:
                yield conn

        contents = StoreResultContents(engine, 8, transaction)
        contents.put("r/e/a", b"1")
        contents.delete("r/e/a")
        store.close()
        assert opened == ["write", "write"]

    def test_delete_removes_a_body_wherever_it_went(
        self, tiers: tuple[SmallResultsInStore, Path]
    ) -> None:
        contents, _ = tiers
        contents.put("r/e/small", b"1")
        contents.put("r/e/large", b"x" * 20)
        contents.delete("r/e/small")
        contents.delete("r/e/large")
        contents.delete("r/e/missing")
        assert contents.get("r/e/small") is None
        assert contents.get("r/e/large") is None


class TestAuditAppendsOfOneSession:
    def _event(self, n: int) -> AuditEvent:
        return AuditEvent(
            id=f"e{n}",
            event_type="test.event",
            event_category="test",
            outcome="success",
            actor_id="alice",
            actor_type="user",
            created_at=f"2030-01-01T00:00:0{n}.000000Z",
        )

    def test_later_appends_chain_after_the_sessions_own_without_reading_the_head(
        self, changes: tuple[SqlStore, list[None]]
    ) -> None:
        store, _ = changes
        heads: list[str] = []

        def count_head_reads(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith("SELECT audit_events.event_hash"):
                heads.append(statement)

        event.listen(store.engine, "before_cursor_execute", count_head_reads)
        with store.write() as session:
            first = session.audit.append(self._event(1))
            second = session.audit.append(self._event(2))
        with store.write() as session:
            third = session.audit.append(self._event(3))
        assert len(heads) == 2  # once per session
        assert (second.prev_hash, third.prev_hash) == (first.event_hash, second.event_hash)
        with store.read() as session:
            assert [e.event_hash for e in session.audit.chain()] == [
                first.event_hash,
                second.event_hash,
                third.event_hash,
            ]
