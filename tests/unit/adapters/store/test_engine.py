"""The SQLite store's WAL switch: retried while another process holds the lock.

A scripted DB-API cursor stands in for SQLite; the persistent-lock case runs on a fake
`time` (monotonic and sleep) so the 5 s busy timeout passes at once.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from adapters.store.engine import BUSY_TIMEOUT_MS, _switch_to_wal

LOCKED = sqlite3.OperationalError("database is locked")


class ScriptedCursor:
    """`execute` raises the scripted errors in order, then succeeds with `mode`."""

    def __init__(self, *errors: Exception, mode: str = "wal") -> None:
        self.errors = list(errors)
        self.mode = mode
        self.executed: list[str] = []

    def execute(self, sql: str) -> None:
        self.executed.append(sql)
        if self.errors:
            raise self.errors.pop(0)

    def fetchone(self) -> tuple[str]:
        return (self.mode,)


class LockedForEver(ScriptedCursor):
    def execute(self, sql: str) -> None:
        self.executed.append(sql)
        raise LOCKED


class FakeTime:
    """`time.monotonic` and `time.sleep` where sleeping only moves the clock."""

    def __init__(self) -> None:
        self.now = 50.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_switch_reports_the_journal_mode() -> None:
    cursor = ScriptedCursor()
    assert _switch_to_wal(cursor) == "wal"
    assert cursor.executed == ["PRAGMA journal_mode = WAL"]


def test_a_locked_database_is_tried_again_until_the_switch_succeeds() -> None:
    cursor = ScriptedCursor(LOCKED, LOCKED)
    assert _switch_to_wal(cursor) == "wal"
    assert len(cursor.executed) == 3


@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("disk I/O error"), sqlite3.DatabaseError("database is locked")],
    ids=["other-operational-error", "not-an-operational-error"],
)
def test_any_other_error_is_raised_at_once(error: Exception) -> None:
    cursor = ScriptedCursor(error)
    with pytest.raises(type(error)) as raised:
        _switch_to_wal(cursor)
    assert raised.value is error
    assert len(cursor.executed) == 1


def test_a_lock_held_past_the_busy_timeout_raises_the_lock_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeTime()
    monkeypatch.setattr(time, "monotonic", fake.monotonic)
    monkeypatch.setattr(time, "sleep", fake.sleep)
    cursor = LockedForEver()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        _switch_to_wal(cursor)
    busy_timeout = BUSY_TIMEOUT_MS / 1000
    assert set(fake.sleeps) == {0.01}
    assert busy_timeout <= fake.now - 50.0 < busy_timeout + 0.02
    assert len(cursor.executed) == len(fake.sleeps) + 1
