"""Where the SQLite store's work runs, on a real SQLite store: short work on the event
loop unless another thread holds the write lock, long work on a worker thread, and the
WAL copied back by the checkpointer instead of inside a commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from adapters.store.sql_store import SqlStore
from adapters.store.sqlite_calls import SqliteStoreCalls, WalCheckpointer
from application.server.store_calls import IN_THREADS

pytestmark = pytest.mark.integration

DEADLINE_SECS = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'dbward.db'}", background_checkpoints=True)
    migrate(engine)
    store = SqlStore(engine)
    yield store
    store.close()


def _count_agents(store: SqlStore) -> int:
    with store.read() as session:
        return len(session.work.list_agents())


class TestShortWork:
    def test_runs_on_the_event_loop_thread_when_no_writer_holds_the_lock(
        self, store: SqlStore
    ) -> None:
        calls = SqliteStoreCalls(store.writer_busy)

        async def scenario() -> tuple[int, int]:
            return threading.get_ident(), await calls.short(threading.get_ident)

        loop_thread, work_thread = asyncio.run(scenario())
        assert work_thread == loop_thread

    def test_goes_to_a_worker_thread_while_another_thread_writes_and_the_loop_keeps_serving(
        self, store: SqlStore
    ) -> None:
        calls = SqliteStoreCalls(store.writer_busy)
        writing, release = threading.Event(), threading.Event()

        def hold_the_write_lock() -> None:
            with store.write():
                writing.set()
                release.wait(DEADLINE_SECS)

        writer = threading.Thread(target=hold_the_write_lock)
        writer.start()
        assert writing.wait(DEADLINE_SECS)

        def write_after_the_holder() -> int:
            with store.write() as session:
                session.work.list_agents()
            return threading.get_ident()

        async def scenario() -> tuple[int, int, int]:
            loop_thread = threading.get_ident()
            waiting = asyncio.ensure_future(calls.short(write_after_the_holder))
            ticks = 0
            # The loop is not blocked behind the writer: it keeps running other tasks.
            while ticks < 3:
                await asyncio.sleep(0.01)
                ticks += 1
            assert not waiting.done()
            release.set()
            work_thread = await asyncio.wait_for(waiting, DEADLINE_SECS)
            return loop_thread, work_thread, ticks

        try:
            loop_thread, work_thread, ticks = asyncio.run(scenario())
        finally:
            release.set()
            writer.join(DEADLINE_SECS)
        assert work_thread != loop_thread
        assert ticks == 3

    def test_writer_busy_is_false_once_the_write_ends(self, store: SqlStore) -> None:
        with store.write():
            assert store.writer_busy()
        assert not store.writer_busy()


class TestLongWork:
    @pytest.mark.parametrize("calls", ["sqlite", "threads"])
    def test_always_runs_on_a_worker_thread(self, store: SqlStore, calls: str) -> None:
        runner = SqliteStoreCalls(store.writer_busy) if calls == "sqlite" else IN_THREADS

        async def scenario() -> tuple[int, int, int]:
            return (
                threading.get_ident(),
                await runner.long(threading.get_ident),
                await runner.long(_count_agents, store),
            )

        loop_thread, work_thread, agents = asyncio.run(scenario())
        assert work_thread != loop_thread
        assert agents == 0


class TestWalCheckpoints:
    def test_commits_leave_the_wal_to_the_checkpointer(self, store: SqlStore) -> None:
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
        checkpointer = WalCheckpointer(store.engine)
        checkpointer.checkpoint()
        for index in range(50):
            with store.transaction() as conn:
                conn.execute(
                    text("INSERT INTO result_contents (storage_key, content) VALUES (:k, :c)"),
                    {"k": f"key-{index}", "c": b"x" * 8192},
                )
        busy, frames, copied = checkpointer.checkpoint()
        # Nothing copied the 400 KiB back before this checkpoint did.
        assert busy == 0
        assert frames >= 100
        assert copied == frames

    def test_the_default_engine_keeps_sqlite_automatic_checkpoints(self, tmp_path: Path) -> None:
        engine = create_store_engine(f"sqlite:///{tmp_path / 'plain.db'}")
        try:
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
        finally:
            engine.dispose()

    def test_the_checkpointer_thread_runs_rounds_until_stopped(self, store: SqlStore) -> None:
        checkpointer = WalCheckpointer(store.engine, period_secs=0.01)
        checkpointer.start()
        try:
            deadline = threading.Event()
            for _ in range(int(DEADLINE_SECS / 0.01)):
                if checkpointer.rounds >= 3:
                    break
                deadline.wait(0.01)
        finally:
            checkpointer.stop()
        rounds = checkpointer.rounds
        assert rounds >= 3
        deadline.wait(0.05)
        assert checkpointer.rounds == rounds
