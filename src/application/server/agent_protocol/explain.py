"""The EXPLAIN jobs agents run for the server: dry runs of a request's statements, shown
to its approvers, and preflight plans of SQL not yet submitted as a request.

A dry-run job is offered in the poll and claimed here with a token; a preflight job is
claimed inside the poll itself (its token comes with it). Either result must carry the
token it was claimed with, so a stale or foreign answer cannot overwrite a newer one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from application.server.agent_protocol.ownership import serving_agent
from application.server.agent_protocol.results import MAX_STORED_ERROR_BYTES
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    preflight_topic,
    request_topic,
)
from application.server.ports.work.explain_jobs import (
    DryRunOutcome,
    DryRunStatus,
    PreflightOutcome,
    PreflightStatus,
)
from application.server.requests.common import new_uuid
from domain.server.errors import Conflict, Gone, PayloadTooLarge, Validation
from domain.server.rbac import Permission, Principal, authorize
from domain.server.text_limits import truncate_utf8
from domain.shared.jobs import DryRunResult, PreflightResult

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = [
    "MAX_PREFLIGHT_ERROR_BYTES",
    "MAX_PREFLIGHT_RESULT_BYTES",
    "ClaimDryRunJob",
    "SubmitDryRunResult",
    "SubmitPreflightResult",
]

MAX_PREFLIGHT_RESULT_BYTES = 256 * 1024
MAX_PREFLIGHT_ERROR_BYTES = 4096


class ClaimDryRunJob:
    """`POST /api/agent/dry-run/{job_id}/claim`: one agent takes a dry-run job."""

    def __init__(
        self, *, store: Store, clock: ServerClock, new_id: Callable[[], str] = new_uuid
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id

    def claim(self, principal: Principal, job_id: str) -> str:
        """§3.7: the claim token that must come back with the result."""
        authorize(principal, Permission.AGENT_OPERATE)
        now = self._clock.now()
        with self._store.write() as session:
            job = session.work.get_dry_run_job(job_id)
            if job is None:
                raise Validation("dry-run job not found")
            serving_agent(session, principal, job.scope)
            claim_token = self._new_id()
            if not session.work.claim_dry_run_job(job.id, principal.subject_id, claim_token, now):
                raise Conflict("already_claimed")
        return claim_token


class SubmitDryRunResult:
    """`POST /api/agent/dry-run/{job_id}/result`: the plan (or error) of a claimed dry run;
    the request's watchers are woken to show it."""

    def __init__(self, *, store: Store, clock: ServerClock, notifier: DispatchNotifier) -> None:
        self._store = store
        self._clock = clock
        self._notifier = notifier

    def submit(self, principal: Principal, job_id: str, body: DryRunResult) -> None:
        """§3.8: an error wins over a plan."""
        authorize(principal, Permission.AGENT_OPERATE)
        now = self._clock.now()
        plan, error = body.outcome.plan, body.outcome.error
        if error is not None:
            outcome = DryRunOutcome(
                status=DryRunStatus.FAILED,
                completed_at=now,
                error_message=truncate_utf8(error, MAX_STORED_ERROR_BYTES),
            )
        else:
            outcome = DryRunOutcome(
                status=DryRunStatus.COMPLETED,
                completed_at=now,
                result_json="{}" if plan is None else json.dumps(plan),
            )
        with self._store.write() as session:
            job = session.work.get_dry_run_job(job_id)
            if job is None or not session.work.finish_dry_run_job(
                job_id, principal.subject_id, body.claim_token, outcome
            ):
                raise Conflict("dry-run job is not claimed by this agent with this token")
        self._notifier.notify(request_topic(job.request_id))


class SubmitPreflightResult:
    """`POST /api/agent/preflight-result`: the plan (or error) of a preflight job,
    announced on the job's topic for whoever waits for it."""

    def __init__(self, *, store: Store, clock: ServerClock, notifier: DispatchNotifier) -> None:
        self._store = store
        self._clock = clock
        self._notifier = notifier

    def submit(self, principal: Principal, body: PreflightResult) -> None:
        """§3.9: exactly one of `result` and `error`; a late or foreign answer is 410."""
        authorize(principal, Permission.AGENT_OPERATE)
        plan, error = body.outcome.plan, body.outcome.error
        if (plan is None) == (error is None):
            raise Validation("exactly one of result and error is required")
        now = self._clock.now()
        if plan is not None:
            serialized = json.dumps(plan, separators=(",", ":"))
            if len(serialized.encode()) > MAX_PREFLIGHT_RESULT_BYTES:
                raise PayloadTooLarge(
                    f"preflight result exceeds {MAX_PREFLIGHT_RESULT_BYTES} bytes"
                )
            outcome = PreflightOutcome(
                status=PreflightStatus.COMPLETED, completed_at=now, result_json=serialized
            )
        else:
            error = error or ""
            if len(error.encode()) > MAX_PREFLIGHT_ERROR_BYTES:
                raise PayloadTooLarge(f"preflight error exceeds {MAX_PREFLIGHT_ERROR_BYTES} bytes")
            outcome = PreflightOutcome(
                status=PreflightStatus.ERROR, completed_at=now, error_message=error
            )
        with self._store.write() as session:
            if not session.work.finish_preflight_job(
                body.job_id, principal.subject_id, body.claim_token, outcome
            ):
                raise Gone("preflight job already completed or expired")
        self._notifier.notify(preflight_topic(body.job_id))
