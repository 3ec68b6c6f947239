"""Background sweeps: leases, dispatch timeouts, expiries (docs/server.md §1.6, §7.2).

Each sweep is one method taking `now`, so tests run it with a fake clock; `run_once(now)`
runs all of them. Every change is a guarded update in its own short transaction with its
audit event: a heartbeat, a result or another replica's sweep that got there first simply
makes the guard fail, and nothing is changed twice. `SweepRunner` calls them on their
intervals (`[sweeps]`, 5 s by default, the reference's 60 s being up to a minute of
"running" for a dead agent).

Ours over the reference: a dispatch timeout returns the request to where it was
dispatched from (`pre_dispatch_status`: an auto-approved request goes back to
`auto_approved`, §11.4), auto-approved/break-glass requests resting after such a
timeout expire like approved ones (their `expires_at` was set when they were resolved),
and an `execution_lost` request expires too, the approved TTL after its loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from application.server.audit_events import about_request, audit_event
from application.server.ports.metrics import NO_METRICS, ServerMetrics
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    dispatch_topic,
    request_topic,
    result_topic,
)
from application.server.ports.work.requests import RequestRecord, RequestUpdate
from application.server.requests.common import new_uuid
from application.server.requests.snapshots import workflow_from_snapshot
from application.server.settings import ServerSettings
from domain.server.request_lifecycle import (
    EXPIRABLE_STATUSES,
    TERMINAL_STATUSES,
    RequestStatus,
    Trigger,
    transition,
)

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreSession

__all__ = [
    "DRY_RUN_CLAIM_SECS",
    "SWEEP_BATCH",
    "ServerSweeps",
    "SweepJob",
    "SweepReport",
    "SweepRunner",
]

log = logging.getLogger("dbward.server.sweeps")

#: `(interval in seconds, sweep)`: the runner calls `sweep(now)` every `interval`.
SweepJob = tuple[float, Callable[[datetime], int]]

#: Rows one sweep handles per run; the rest wait for the next run.
SWEEP_BATCH = 500
#: A dry-run EXPLAIN claimed this long ago without a result goes back to pending.
DRY_RUN_CLAIM_SECS = 60
#: The error a pending dry-run job gets when its request finished first.
DRY_RUN_ORPHANED = "request finished before the dry run ran"


@dataclass(frozen=True)
class SweepReport:
    leases_lost: int = 0
    dispatches_timed_out: int = 0
    requests_expired: int = 0
    dry_runs_released: int = 0
    dry_runs_expired: int = 0
    preflights_expired: int = 0


class ServerSweeps:
    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        notifier: DispatchNotifier,
        new_id: Callable[[], str] = new_uuid,
        metrics: ServerMetrics = NO_METRICS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._notifier = notifier
        self._new_id = new_id
        self._metrics = metrics

    def run_once(self, now: datetime) -> SweepReport:
        return SweepReport(
            leases_lost=self.reclaim_leases(now),
            dispatches_timed_out=self.time_out_dispatches(now),
            requests_expired=self.expire_requests(now),
            dry_runs_released=self.release_dry_runs(now),
            dry_runs_expired=self.expire_dry_runs(now),
            preflights_expired=self.expire_preflights(now),
        )

    # --- lease_reclaim ----------------------------------------------------------------------

    def reclaim_leases(self, now: datetime) -> int:
        """Executions past their lease → failed; their running request → execution_lost."""
        with self._store.read() as session:
            expired = session.work.expired_leases(now, SWEEP_BATCH)
        lost = 0
        for execution in expired:
            with self._store.write() as session:
                if not session.work.fail_expired_lease(execution.id, now):
                    continue  # a heartbeat or a result got there first
                record = session.work.get_request(execution.request_id)
                if record is None:
                    continue
                target = transition(RequestStatus.RUNNING, Trigger.LEASE_EXPIRED)
                if not session.work.update_request_status(
                    record.id,
                    allowed_from={RequestStatus.RUNNING},
                    to=target,
                    now=now,
                    changes=RequestUpdate(expires_at=self._lost_request_expiry(record, now)),
                ):
                    continue  # cancelled meanwhile: only the execution fails
                lost += 1
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type="execution.lost",
                        category="agent",
                        actor=None,
                        reason="lease expired",
                        metadata={
                            "agent_id": execution.agent_id,
                            "lease_expired_at": execution.lease_expires_at.isoformat(),
                        },
                        **about_request(record, execution.id),
                    )
                )
            self._notifier.notify(request_topic(execution.request_id))
        self._metrics.leases_expired(lost)
        return lost

    def _lost_request_expiry(self, record: RequestRecord, now: datetime) -> datetime:
        """An `execution_lost` request waits for a resume as an approved one does, so it
        gets the approved TTL, counted from the loss (docs/server.md §1.6)."""
        workflow = workflow_from_snapshot(record.workflow_snapshot_json)
        return now + timedelta(seconds=self._settings.approved_ttl_secs(workflow))

    # --- dispatch_timeout -------------------------------------------------------------------

    def time_out_dispatches(self, now: datetime) -> int:
        """Dispatched and unclaimed for `dispatch_timeout_secs` → back where it came from."""
        cutoff = now - timedelta(seconds=self._settings.sweeps.dispatch_timeout_secs)
        with self._store.read() as session:
            stale = session.work.stale_dispatched(cutoff, SWEEP_BATCH)
        count = 0
        for record in stale:
            target = transition(
                RequestStatus.DISPATCHED,
                Trigger.DISPATCH_TIMEOUT,
                pre_dispatch_status=record.pre_dispatch_status,
            )
            with self._store.write() as session:
                if not session.work.update_request_status(
                    record.id,
                    allowed_from={RequestStatus.DISPATCHED},
                    to=target,
                    now=now,
                    changes=RequestUpdate(clear_pre_dispatch_status=True),
                    updated_before=cutoff,
                ):
                    continue
                count += 1
                self._append(
                    session,
                    now,
                    "request.dispatch_timeout",
                    record,
                    reason=f"not claimed within {self._settings.sweeps.dispatch_timeout_secs} s",
                    metadata={"returned_to": target.value},
                )
            self._notifier.notify(request_topic(record.id))
            self._notifier.notify(dispatch_topic(record.scope))
        return count

    # --- ttl_expiry -------------------------------------------------------------------------

    def expire_requests(self, now: datetime) -> int:
        """Pending past its pending TTL; approved, auto-approved, break-glass and
        execution_lost past their approved TTL."""
        with self._store.read() as session:
            due = session.work.expirable_requests(EXPIRABLE_STATUSES, now, SWEEP_BATCH)
        count = 0
        for record in due:
            target = transition(record.status, Trigger.EXPIRE)
            with self._store.write() as session:
                if not session.work.update_request_status(
                    record.id,
                    allowed_from={record.status},
                    to=target,
                    now=now,
                    changes=RequestUpdate(resolved_at=now),
                ):
                    continue
                count += 1
                self._append(
                    session,
                    now,
                    "request.expired",
                    record,
                    reason=f"{record.status.value} TTL passed",
                    metadata={"from": record.status.value},
                )
            self._notifier.notify(request_topic(record.id))
            self._notifier.notify(result_topic(record.id))
        return count

    # --- EXPLAIN jobs -----------------------------------------------------------------------

    def release_dry_runs(self, now: datetime) -> int:
        """Dry-run jobs claimed over a minute ago without an answer go back to pending."""
        with self._store.write() as session:
            released = session.work.release_stale_dry_run_claims(
                now - timedelta(seconds=DRY_RUN_CLAIM_SECS)
            )
        return released

    def expire_dry_runs(self, now: datetime) -> int:
        """Pending dry-run jobs of finished requests fail: nobody will read their plan, and
        while pending they would answer every long-poll of their scope at once."""
        with self._store.write() as session:
            return session.work.fail_orphaned_dry_runs(TERMINAL_STATUSES, DRY_RUN_ORPHANED, now)

    def expire_preflights(self, now: datetime) -> int:
        with self._store.write() as session:
            return session.work.expire_preflight_jobs(now)

    def _append(
        self,
        session: StoreSession,
        now: datetime,
        event_type: str,
        record: RequestRecord,
        *,
        reason: str,
        metadata: dict[str, str],
    ) -> None:
        session.audit.append(
            audit_event(
                new_id=self._new_id,
                now=now,
                event_type=event_type,
                category="approval",
                actor=None,
                reason=reason,
                metadata=metadata,
                **about_request(record),
            )
        )


class SweepRunner:
    """Runs each sweep on its interval until `stop` is set. Store work runs in threads."""

    def __init__(
        self,
        sweeps: ServerSweeps,
        settings: ServerSettings,
        clock: ServerClock,
        *,
        extra_jobs: Iterable[SweepJob] = (),
    ) -> None:
        """`extra_jobs`: (interval, sweep) pairs of sweeps that live in their own modules
        (retention purges, audit checkpoints), run on the same loop."""
        self._sweeps = sweeps
        self._clock = clock
        config = settings.sweeps
        self._jobs: tuple[SweepJob, ...] = (
            (config.lease_reclaim_interval_secs, sweeps.reclaim_leases),
            (config.dispatch_timeout_interval_secs, sweeps.time_out_dispatches),
            (config.ttl_expiry_interval_secs, sweeps.expire_requests),
            (float(DRY_RUN_CLAIM_SECS) / 4, sweeps.release_dry_runs),
            (float(DRY_RUN_CLAIM_SECS) / 4, sweeps.expire_dry_runs),
            (config.ttl_expiry_interval_secs, sweeps.expire_preflights),
            *extra_jobs,
        )

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = [loop.time() for _ in self._jobs]
        while not stop.is_set():
            for index, (interval, sweep) in enumerate(self._jobs):
                if loop.time() < due[index]:
                    continue
                try:
                    await asyncio.to_thread(sweep, self._clock.now())
                except Exception:  # a sweep must never stop the others or the loop
                    log.exception("sweep %s failed", getattr(sweep, "__name__", sweep))
                due[index] = loop.time() + max(interval, 0.05)
            pause = max(min(due) - loop.time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
