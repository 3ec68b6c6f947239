"""The course of a migration run both engines share, driven without a database.

The lock wait gets a fake lock function and a real cancel token; the run gets a fake
session that records the steps it is asked for, in order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from adapters.sql_common.migration_runner import (
    MigrationLock,
    rollback_quietly,
    run_migration,
    wait_for_lock,
)
from application.agent.cancellation import CancelReason, CancelToken
from domain.agent.errors import MigrationError
from domain.agent.migrations import Direction, Migration, RepairAction, RepairDetail
from domain.shared.operations import Operation

LOGGER = "dbward.agent.migrations"
WAITING = (
    "waiting for the migration lock FAKE_LOCK('m'): another migration is running on this database"
)
ACQUIRED = "migration lock acquired"
CANCELLED = "cancelled while waiting for the migration lock; nothing was applied"


class LockAttempts:
    """A lock function that is refused `refusals` times, then succeeds."""

    def __init__(self, refusals: int = 0, *, forever: bool = False) -> None:
        self.refusals = refusals
        self.forever = forever
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return not self.forever and self.calls > self.refusals


def wait(attempts: Callable[[], bool], cancel: CancelToken, poll_secs: float = 0.001) -> None:
    wait_for_lock(attempts, cancel, poll_secs=poll_secs, description="FAKE_LOCK('m')")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


# --- the lock wait --------------------------------------------------------------------------


def test_a_free_lock_is_taken_at_once_without_a_word(caplog: pytest.LogCaptureFixture) -> None:
    attempts = LockAttempts()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        wait(attempts, CancelToken())
    assert attempts.calls == 1
    assert messages(caplog) == []


def test_a_busy_lock_is_tried_until_taken_and_the_wait_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = LockAttempts(refusals=4)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        wait(attempts, CancelToken())
    assert attempts.calls == 5
    assert messages(caplog) == [WAITING, ACQUIRED]


def test_the_attempts_are_the_poll_interval_apart() -> None:
    attempts = LockAttempts(refusals=3)
    started = time.monotonic()
    wait(attempts, CancelToken(), poll_secs=0.05)
    assert time.monotonic() - started >= 3 * 0.05


def test_a_cancel_ends_the_wait_in_the_middle_of_a_pause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = LockAttempts(forever=True)
    cancel = CancelToken()
    timer = threading.Timer(0.1, cancel.cancel, args=(CancelReason.SERVER_CANCELLED,))
    started = time.monotonic()
    timer.start()
    try:
        with (
            caplog.at_level(logging.INFO, logger=LOGGER),
            pytest.raises(MigrationError) as info,
        ):
            wait(attempts, cancel, poll_secs=60)
    finally:
        timer.cancel()
    assert str(info.value) == CANCELLED
    assert time.monotonic() - started < 5  # far from the 60 s pause
    assert attempts.calls == 1
    assert not info.value.connectivity
    assert messages(caplog) == [WAITING]


def test_without_a_pause_a_cancel_is_seen_after_the_next_attempt() -> None:
    """MySQL's attempts wait on the server themselves (GET_LOCK with a timeout)."""
    cancel = CancelToken()
    cancel.cancel(CancelReason.LEASE_LOST)
    attempts = LockAttempts(forever=True)
    with pytest.raises(MigrationError) as info:
        wait(attempts, cancel, poll_secs=0)
    assert str(info.value) == CANCELLED
    assert attempts.calls == 1


def test_a_free_lock_is_taken_even_after_a_cancel() -> None:
    cancel = CancelToken()
    cancel.cancel(CancelReason.SHUTDOWN)
    attempts = LockAttempts()
    wait(attempts, cancel)
    assert attempts.calls == 1


def test_a_failing_attempt_ends_the_wait_with_its_own_error() -> None:
    calls: list[int] = []

    def broken() -> bool:
        calls.append(1)
        raise ConnectionError("server closed the connection")

    with pytest.raises(ConnectionError, match="server closed the connection"):
        wait(broken, CancelToken())
    assert calls == [1]


# --- the course of a run --------------------------------------------------------------------


class DriverError(Exception):
    """What the fake session's driver raises."""


class FakeLock:
    description = "FAKE_LOCK('m')"
    poll_secs = 0.0

    def __init__(self, session: FakeSession) -> None:
        self._session = session

    def try_acquire(self) -> bool:
        self._session.steps.append("acquire")
        return True

    def release(self) -> None:
        self._session.steps.append("release")
        if self._session.release_fails:
            raise DriverError("release refused")


class FakeSession:
    """Records each step; `fail_at` makes that step raise the driver's error."""

    driver_error = DriverError

    def __init__(self, applied: Sequence[str] = (), fail_at: str = "") -> None:
        self.steps: list[str] = []
        self.applied = list(applied)
        self.fail_at = fail_at
        self.gone = False
        self.release_fails = False
        self.rollback_fails = False

    def _step(self, name: str) -> None:
        self.steps.append(name)
        if name == self.fail_at:
            raise DriverError(f"{name} failed")

    def describe(self, error: Exception) -> str:
        return f"described: {error}"

    def lost(self, error: Exception | None = None) -> bool:
        return self.gone

    def close(self) -> None:
        self.steps.append("close")

    def lock(self) -> MigrationLock:
        self._step("lock")
        return FakeLock(self)

    def rollback(self) -> None:
        self.steps.append("rollback")
        if self.rollback_fails:
            raise DriverError("rollback refused")

    def ensure_table(self) -> None:
        self._step("ensure_table")

    def applied_versions(self) -> list[str]:
        self._step("applied_versions")
        return list(self.applied)

    def repair(self, repair: RepairDetail) -> bool:
        self._step(f"repair {repair.action.value} {repair.version}")
        return repair.action is RepairAction.MARK_APPLIED

    def prepare_plan(
        self, direction: Direction, plan: Sequence[Migration]
    ) -> Callable[[Migration], None]:
        self._step(f"prepare {direction.value} {[m.version for m in plan]}")
        return lambda migration: self._step(f"apply {migration.version}")


def up_detail(*versions: str) -> str:
    return json.dumps(
        {
            "format": "v2",
            "direction": "up",
            "versions": list(versions),
            "migrations": [{"version": v, "sql": "SELECT 1"} for v in versions],
        }
    )


def test_a_malformed_detail_never_opens_a_session() -> None:
    opened: list[FakeSession] = []

    def open_session() -> FakeSession:
        opened.append(FakeSession())
        return opened[-1]

    with pytest.raises(MigrationError):
        run_migration(Operation.MIGRATE_UP, "{not json", CancelToken(), open_session)
    with pytest.raises(MigrationError) as info:
        run_migration(Operation.EXECUTE_DML, "", CancelToken(), open_session)
    assert str(info.value) == "not a migration operation: execute_dml"
    assert opened == []


def test_status_takes_no_lock() -> None:
    session = FakeSession(applied=["1", "2"])
    output = run_migration(Operation.MIGRATE_STATUS, "", CancelToken(), lambda: session)
    assert json.loads(output.result_data) == {"applied_versions": ["1", "2"]}
    assert session.steps == ["ensure_table", "applied_versions", "close"]


def test_up_reads_the_versions_under_the_lock_and_releases_it_before_closing() -> None:
    session = FakeSession(applied=["1"])
    detail = up_detail("1", "2")
    output = run_migration(Operation.MIGRATE_UP, detail, CancelToken(), lambda: session)
    assert json.loads(output.result_data) == {"applied": ["2"]}
    assert session.steps == [
        "lock",
        "acquire",
        "ensure_table",
        "applied_versions",
        "prepare up ['2']",
        "apply 2",
        "release",
        "close",
    ]


def test_an_empty_plan_says_so(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(applied=["1"])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_migration(Operation.MIGRATE_UP, up_detail("1"), CancelToken(), lambda: session)
    assert messages(caplog) == ["migrate up: nothing to do"]


def test_repair_runs_under_the_lock_and_logs_what_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = FakeSession()
    mark = json.dumps({"action": "mark_applied", "version": "42"})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        output = run_migration(Operation.MIGRATE_REPAIR, mark, CancelToken(), lambda: session)
    assert output.result_data == '{"repaired":"mark_applied","version":"42"}'
    assert session.steps == [
        "lock",
        "acquire",
        "ensure_table",
        "repair mark_applied 42",
        "release",
        "close",
    ]
    assert messages(caplog) == ["migrate repair mark_applied 42: done"]


@pytest.mark.parametrize("step", ["lock", "ensure_table", "applied_versions"])
def test_a_driver_error_outside_a_version_is_a_migration_error(step: str) -> None:
    session = FakeSession(fail_at=step)
    with pytest.raises(MigrationError) as info:
        run_migration(Operation.MIGRATE_UP, up_detail("1"), CancelToken(), lambda: session)
    assert str(info.value) == f"described: {step} failed"
    assert not info.value.connectivity
    assert "apply 1" not in session.steps
    assert session.steps[-1] == "close"
    assert ("release" in session.steps) is (step != "lock")


def test_a_lost_session_is_a_connectivity_error_and_leaves_the_release_to_the_server() -> None:
    session = FakeSession(fail_at="applied_versions")
    session.gone = True
    with pytest.raises(MigrationError) as info:
        run_migration(Operation.MIGRATE_UP, up_detail("1"), CancelToken(), lambda: session)
    assert info.value.connectivity
    assert "release" not in session.steps
    assert session.steps[-1] == "close"


def test_a_failed_release_is_logged_and_the_result_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = FakeSession()
    session.release_fails = True
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        output = run_migration(Operation.MIGRATE_UP, up_detail("1"), CancelToken(), lambda: session)
    assert json.loads(output.result_data) == {"applied": ["1"]}
    assert messages(caplog) == ["could not release the migration lock explicitly: release refused"]
    assert session.steps[-1] == "close"


# --- the rollback after a failed version ----------------------------------------------------


def test_a_failed_rollback_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession()
    session.rollback_fails = True
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        rollback_quietly(session)
    assert session.steps == ["rollback"]
    assert messages(caplog) == ["rollback after a failed migration failed: rollback refused"]


def test_a_lost_session_has_nothing_to_roll_back() -> None:
    session = FakeSession()
    session.gone = True
    rollback_quietly(session)
    assert session.steps == []
