"""The course of a migration run, the same on PostgreSQL and MySQL/MariaDB.

Each engine's module (`adapters.postgres.migrations`, `adapters.mysql.migrations`) says how
its database does each step, as a `MigrationSession` and a `MigrationLock`; this module
says which steps a run takes and in which order, so these rules hold alike on both:

* The detail is parsed before connecting: a malformed one never touches the database.
* One connection serves the whole run and is closed after it, whatever happened.
* migrate_up/down/repair take the migration lock *before* the tracking table is created
  or the applied versions are read, so two runs racing past the server's claim check
  still apply each version once: the second one reads the first one's versions once it
  gets the lock. migrate_status takes no lock.
* Waiting for the lock honours the cancel token: nothing has run yet, so the run ends
  with nothing applied. Once versions run, cancellation is honoured only between them
  (`run_plan`): a migration is never killed.
* A driver error outside a version (lock, tracking table, reads) means nothing was
  applied; an engine reports a failed version itself, with what is known of its state.
* The lock is released explicitly at the end; if that fails, closing the connection
  (always done next) releases it anyway.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from tenacity import RetryCallState, Retrying, retry_if_result, wait_fixed

from application.agent.cancellation import CancelToken
from domain.agent.errors import MigrationError
from domain.agent.migrations import (
    Direction,
    Migration,
    MigrationDetail,
    RepairDetail,
    done_result,
    parse_migration_detail,
    parse_repair_detail,
    plan_for,
    repair_result,
    run_plan,
    status_result,
)
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation

__all__ = [
    "LOCK_WAIT_CANCELLED",
    "MigrationLock",
    "MigrationSession",
    "rollback_quietly",
    "run_migration",
    "wait_for_lock",
]

log = logging.getLogger("dbward.agent.migrations")

LOCK_WAIT_CANCELLED = "cancelled while waiting for the migration lock; nothing was applied"


class MigrationLock(Protocol):
    """An engine's migration lock, held by the run's connection until it is released."""

    @property
    def description(self) -> str:
        """How the "waiting" log line names the lock, e.g. `GET_LOCK('dbward.migrations.app')`."""
        ...

    @property
    def poll_secs(self) -> float:
        """The pause between two attempts; 0 when an attempt itself waits on the server."""
        ...

    def try_acquire(self) -> bool:
        """One attempt: True once the lock is held. Raises the driver's error."""
        ...

    def release(self) -> None:
        """Give the lock back; called only while the session is connected."""
        ...


class MigrationSession(Protocol):
    """An engine's side of one run: the connection it holds from start to end."""

    @property
    def driver_error(self) -> type[Exception]:
        """The driver's base error, which any step below may raise."""
        ...

    def describe(self, error: Exception) -> str:
        """A driver error as the run's error message says it."""
        ...

    def lost(self, error: Exception | None = None) -> bool:
        """True when the session itself is gone (feeds degraded mode).

        `error`, when given, is a failure that may tell so by itself.
        """
        ...

    def close(self) -> None: ...

    def lock(self) -> MigrationLock:
        """The migration lock of the session's database (not yet taken)."""
        ...

    def rollback(self) -> None:
        """End the transaction a failed version left open, if there is one."""
        ...

    def ensure_table(self) -> None:
        """Create the tracking table `schema_migrations` unless it exists."""
        ...

    def applied_versions(self) -> list[str]: ...

    def repair(self, repair: RepairDetail) -> bool:
        """Add or remove one version row; True if a row changed."""
        ...

    def prepare_plan(
        self, direction: Direction, plan: Sequence[Migration]
    ) -> Callable[[Migration], None]:
        """Refuse a plan that would fail half way, before anything runs; then return what
        applies (or reverts) one of its versions, raising a `DatabaseError` on failure."""
        ...


def run_migration(
    operation: Operation,
    detail: str,
    cancel: CancelToken,
    open_session: Callable[[], MigrationSession],
) -> ExecutionOutput:
    """Run one migrate_* operation on a session from `open_session`, closed afterwards."""
    # Parse before connecting: a malformed detail never touches the database.
    body: Callable[[MigrationSession], str]
    if operation is Operation.MIGRATE_STATUS:
        body = _status
    elif operation is Operation.MIGRATE_REPAIR:
        repair = parse_repair_detail(detail)
        body = functools.partial(_repair, repair=repair, cancel=cancel)
    elif operation in (Operation.MIGRATE_UP, Operation.MIGRATE_DOWN):
        direction = Direction.UP if operation is Operation.MIGRATE_UP else Direction.DOWN
        parsed = parse_migration_detail(detail, direction)
        body = functools.partial(_migrate, detail=parsed, cancel=cancel)
    else:
        raise MigrationError(f"not a migration operation: {operation.value}")
    session = open_session()
    try:
        return ExecutionOutput(result_data=body(session))
    except session.driver_error as exc:
        # Errors outside a version (lock, tracking table, reads): nothing was applied.
        raise MigrationError(session.describe(exc), connectivity=session.lost(exc)) from exc
    finally:
        session.close()


def _status(session: MigrationSession) -> str:
    session.ensure_table()
    return status_result(session.applied_versions())


def _repair(session: MigrationSession, repair: RepairDetail, cancel: CancelToken) -> str:
    with _holding_lock(session, cancel):
        session.ensure_table()
        changed = session.repair(repair)
        log.info(
            "migrate repair %s %s: %s",
            repair.action.value,
            repair.version,
            "done" if changed else "nothing to change",
        )
    return repair_result(repair)


def _migrate(session: MigrationSession, detail: MigrationDetail, cancel: CancelToken) -> str:
    direction = detail.direction
    with _holding_lock(session, cancel):
        session.ensure_table()
        plan = plan_for(detail, set(session.applied_versions()))
        apply = session.prepare_plan(direction, plan)
        if not plan:
            log.info("migrate %s: nothing to do", direction.value)
        done = run_plan(direction, plan, apply, lambda: cancel.cancelled)
    return done_result(direction, done)


# --- the lock -------------------------------------------------------------------------------


@contextlib.contextmanager
def _holding_lock(session: MigrationSession, cancel: CancelToken) -> Iterator[None]:
    lock = session.lock()
    wait_for_lock(lock.try_acquire, cancel, poll_secs=lock.poll_secs, description=lock.description)
    try:
        yield
    finally:
        _release(session, lock)


def _release(session: MigrationSession, lock: MigrationLock) -> None:
    if session.lost():
        return  # the server released it with the session
    try:
        lock.release()
    except session.driver_error as exc:
        # Closing the connection (always done next) releases the lock anyway.
        log.warning("could not release the migration lock explicitly: %s", exc)


def wait_for_lock(
    try_acquire: Callable[[], bool],
    cancel: CancelToken,
    *,
    poll_secs: float,
    description: str,
) -> None:
    """Call `try_acquire` until it takes the lock, `poll_secs` apart; no time limit.

    The first attempt is always made, even after a cancel: a free lock is taken at once.
    After a failed one, a cancel ends the wait with `MigrationError` (nothing has run), at
    once even in the middle of a pause. The log says "waiting" once, and "acquired" only
    after a wait. An error raised by `try_acquire` ends the wait unchanged.
    """

    def log_waiting(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            log.info(
                "waiting for the migration lock %s: another migration is running on this database",
                description,
            )

    def pause_unless_cancelled(seconds: float) -> None:
        if cancel.event.wait(seconds):
            raise MigrationError(LOCK_WAIT_CANCELLED)

    retrying = Retrying(
        retry=retry_if_result(lambda acquired: not acquired),
        wait=wait_fixed(poll_secs),
        sleep=pause_unless_cancelled,
        before_sleep=log_waiting,
    )
    retrying(try_acquire)
    if retrying.statistics["attempt_number"] > 1:
        log.info("migration lock acquired")


# --- failed versions ------------------------------------------------------------------------


def rollback_quietly(session: MigrationSession) -> None:
    """Roll back what a failed version left open.

    The version's own error is what the run reports, so a failure here is only logged.
    """
    if session.lost():
        return
    try:
        session.rollback()
    except session.driver_error as exc:
        log.warning("rollback after a failed migration failed: %s", exc)
