"""Tracks the work in flight: claimed jobs (for `limit`, drain and the status block) and
EXPLAIN jobs (bounded and waited for by drain, unlike dbward 0.2)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from application.agent.cancellation import CancelReason, CancelToken
from domain.shared.jobs import ActiveJobStatus, DispatchedJob
from domain.shared.operations import parse_operation


@dataclass
class _Tracked:
    job: DispatchedJob
    started_at: float
    cancel: CancelToken
    execution_id: str | None = None


class JobTracker:
    """Thread-safe registry of in-flight work, keyed by request id.

    A dispatched job can show up in two polls in a row while its claim is still in flight;
    the second delivery is refused here instead of being run twice or under-counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Tracked] = {}
        self._explains: set[str] = set()
        self._changed = threading.Condition(self._lock)

    def try_start(self, job: DispatchedJob, now: float) -> CancelToken | None:
        """Reserve a slot for `job`; None if it is already being handled."""
        with self._lock:
            if job.id in self._jobs:
                return None
            token = CancelToken()
            self._jobs[job.id] = _Tracked(job=job, started_at=now, cancel=token)
            return token

    def attach_execution(self, request_id: str, execution_id: str) -> None:
        with self._lock:
            tracked = self._jobs.get(request_id)
            if tracked is not None:
                tracked.execution_id = execution_id

    def finish(self, request_id: str) -> None:
        with self._changed:
            self._jobs.pop(request_id, None)
            self._changed.notify_all()

    def try_start_explain(self, job_id: str, limit: int) -> bool:
        """Reserve an EXPLAIN slot; False if `job_id` is running or `limit` is reached."""
        with self._lock:
            if job_id in self._explains or len(self._explains) >= limit:
                return False
            self._explains.add(job_id)
            return True

    def start_explain_unbounded(self, job_id: str) -> bool:
        """Reserve a slot for a preflight the server already claimed for us (cannot be refused)."""
        with self._lock:
            if job_id in self._explains:
                return False
            self._explains.add(job_id)
            return True

    def finish_explain(self, job_id: str) -> None:
        with self._changed:
            self._explains.discard(job_id)
            self._changed.notify_all()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._jobs)

    @property
    def in_flight_explains(self) -> int:
        with self._lock:
            return len(self._explains)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._jobs and not self._explains

    def wait_idle(self, timeout_secs: float) -> bool:
        """Block until nothing is in flight or the timeout passes; True when idle."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._jobs and not self._explains, timeout=max(timeout_secs, 0.0)
            )

    def active_jobs(self, now: float) -> tuple[ActiveJobStatus, ...]:
        with self._lock:
            return tuple(
                ActiveJobStatus(
                    request_id=tracked.job.id,
                    operation=tracked.job.operation,
                    elapsed_secs=int(max(now - tracked.started_at, 0)),
                )
                for tracked in self._jobs.values()
            )

    def cancel_all(self, reason: CancelReason) -> int:
        """Cancel every running statement except migrations; returns how many were fired."""
        with self._lock:
            targets = [t for t in self._jobs.values() if not _is_migration(t.job.operation)]
        return sum(1 for tracked in targets if tracked.cancel.cancel(reason))


def _is_migration(operation: str) -> bool:
    try:
        return parse_operation(operation).is_migration
    except ValueError:
        return False
