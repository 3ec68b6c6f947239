"""Where the SQLite store's work runs: short work on the event loop, the rest on threads.

A short store call on SQLite (a few statements on a local file in WAL mode, no fsync at
commit) costs tens of microseconds; handing it to a worker thread and back costs more,
and under load each hand-off also waits for the GIL behind the event loop. So short work
runs on the loop itself, unless another thread of this process holds the store's write
lock: then it goes to a thread, as before, and the loop keeps serving while that writer
finishes. With `wal_autocheckpoint` off (`create_store_engine(..., background_checkpoints=
True)`), no commit on the loop copies the WAL back into the database: `WalCheckpointer`
does that from a thread of its own (docs/server.md §7.1, "Where store work runs").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine

from application.server.store_calls import StoreCallsInThreads

_P = ParamSpec("_P")
_T = TypeVar("_T")

log = logging.getLogger("dbward.server")

#: How often the WAL is copied back into the database file.
CHECKPOINT_PERIOD_SECS = 1.0


class SqliteStoreCalls(StoreCallsInThreads):
    """`StoreCalls` for the SQLite store: long work on threads as for any store, short
    work on the loop; `writer_busy` says whether another thread holds the store's write
    lock right now (`SqlStore.writer_busy`)."""

    def __init__(self, writer_busy: Callable[[], bool]) -> None:
        self._writer_busy = writer_busy

    async def short(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._writer_busy():
            return await super().short(work, *args, **kwargs)
        return work(*args, **kwargs)


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` every `period_secs` on a thread of its own.

    PASSIVE never waits for readers or writers: it copies what it can, and the next
    round copies the rest. The engine's connections have `wal_autocheckpoint = 0`, so this
    is the only checkpoint while the server runs; SQLite also checkpoints when the last
    connection closes.
    """

    def __init__(self, engine: Engine, period_secs: float = CHECKPOINT_PERIOD_SECS) -> None:
        self._engine = engine
        self._period = period_secs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dbward-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied back)."""
        raw = self._engine.raw_connection()
        try:
            # The driver connection, not SQLAlchemy's: its `begin` event would open a
            # transaction first, and a checkpoint cannot run inside one.
            connection: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
            row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            raw.close()
        self.rounds += 1
        return int(row[0]), int(row[1]), int(row[2])

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.checkpoint()
            except Exception:  # the next round tries again; the WAL only grows meanwhile
                log.warning("WAL checkpoint failed", exc_info=True)
