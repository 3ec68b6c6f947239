"""`POST /api/preflight`: what submitting some SQL would meet, without submitting it.

docs/preflight.md. The judgement is the one creating a request runs (`JudgeSql`), so
preflight cannot promise what create would refuse. Nothing is created; the only writes are
the preflight EXPLAIN jobs (one per statement with a plan, handed to an agent serving the
exact scope in its next poll, expiring shortly after the caller stops waiting) and the
audit events. A blocked text is never sent to an agent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from application.server.audit_events import audit_event
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    SqlClassifier,
    dispatch_topic,
    preflight_topic,
)
from application.server.ports.work.explain_jobs import PreflightJobRecord, PreflightStatus
from application.server.requests.audit_detail import audit_detail
from application.server.requests.common import (
    LONG_POLL_RECHECK_SECS,
    first_step_approvers,
    new_uuid,
)
from application.server.requests.create import MAX_DETAIL_BYTES
from application.server.requests.judgement import Judgement, JudgeSql
from application.server.settings import ServerSettings
from domain.server.agent_registry import DerivedStatus, derived_status
from domain.server.errors import RateLimited, Validation
from domain.server.policy_matching import matched_by
from domain.server.preflight import (
    Blocker,
    TableImpact,
    decision_preview,
    explain_statements,
    preflight_status,
    table_impact,
)
from domain.server.preflight import (
    PreflightStatus as Status,
)
from domain.server.rbac import Permission, Principal, authorize, has_permission
from domain.server.request_permissions import permissions_to_create
from domain.server.sql_classification import PARSE_FAILED
from domain.server.text_limits import utf8_len
from domain.server.workflows import NeedsApproval, scope_name_problem
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = [
    "DEFAULT_EXPLAIN_TIMEOUT_MS",
    "ExplainReport",
    "ExplainStatus",
    "PreflightInput",
    "PreflightReport",
    "RunPreflight",
]

DEFAULT_EXPLAIN_TIMEOUT_MS = 5000
#: A job outlives the caller's wait by this much, so a late plan still finds its row.
JOB_GRACE_SECS = 5


@dataclass(frozen=True)
class PreflightInput:
    database: str
    environment: str
    sql: str
    include_explain: bool = True
    explain_timeout_ms: int = DEFAULT_EXPLAIN_TIMEOUT_MS
    client_ip: str | None = None


class ExplainStatus(StrEnum):
    OK = "ok"
    #: An agent answered, with a database error for at least one statement.
    ERROR = "error"
    #: Not attempted (`reason` says why).
    SKIPPED = "skipped"
    #: Not every plan came back within the wait.
    TIMEOUT = "timeout"
    #: No healthy agent serves the scope.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class ExplainReport:
    status: ExplainStatus
    reason: str | None = None
    #: (statement number, plan) of each statement explained.
    plans: tuple[tuple[int, Any], ...] = ()
    #: (statement number, error) of each statement the agent could not explain.
    errors: tuple[tuple[int, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reason": self.reason,
            "plans": [{"statement": number, "plan": plan} for number, plan in self.plans],
            "error": "; ".join(f"statement {n}: {e}" for n, e in self.errors) or None,
        }


@dataclass(frozen=True)
class PreflightReport:
    status: Status
    judgement: Judgement
    registered: bool
    blockers: tuple[Blocker, ...]
    impact: tuple[TableImpact, ...]
    explain: ExplainReport
    next_actions: tuple[str, ...] = field(default=())

    @property
    def retryable(self) -> bool:
        return self.status is not Status.REQUESTABLE

    @property
    def fix_hints(self) -> tuple[str, ...]:
        hints = [blocker.fix_hint for blocker in self.blockers]
        review = self.judgement.review
        if review is not None:
            hints.extend(f"review warning: {finding.message}" for finding in review.warnings)
        return tuple(dict.fromkeys(hints))

    def to_json(self) -> dict[str, Any]:
        judgement = self.judgement
        risk = judgement.risk
        return {
            "status": self.status.value,
            "database": judgement.scope.database,
            "environment": judgement.scope.environment,
            "registered": self.registered,
            "dialect": judgement.dialect,
            "risk": None if risk is None else risk.level.value,
            "classification": self._classification(),
            "review": self._review(),
            "risk_assessment": None if risk is None else risk.to_json(),
            "policy": self._policy(),
            "impact": {
                "schema_status": judgement.schema_status.value,
                "tables": [_impact_json(table) for table in self.impact],
            },
            "explain": self.explain.to_json(),
            "blockers": [
                {"code": b.code, "message": b.message, "fix_hint": b.fix_hint}
                for b in self.blockers
            ],
            "fix_hints": list(self.fix_hints),
            "retryable": self.retryable,
            "next_actions": list(self.next_actions),
        }

    def _classification(self) -> dict[str, Any] | None:
        found = self.judgement.classification
        if found is None:
            return None
        return {
            "statement_type": found.kind.value,
            "operation": found.operation.value,
            "mutating": found.operation is Operation.EXECUTE_DML,
            "ddl": found.contains_ddl,
            "requires_ddl_permission": found.contains_ddl,
            "multi_statement": found.statement_count > 1,
            "statement_count": found.statement_count,
            "rejected_reason": found.rejected_reason,
            "parse_failed": found.parse_failed,
            "statements": [{"class": s.kind.value, "reason": s.reason} for s in found.statements],
        }

    def _review(self) -> dict[str, Any]:
        review = self.judgement.review
        return {
            "policy_id": self.judgement.review_policy.id,
            "findings": [] if review is None else [f.to_json() for f in review.findings],
            "blocked": review is not None and review.blocked,
        }

    def _policy(self) -> dict[str, Any]:
        workflow, decision = self.judgement.workflow, self.judgement.decision
        return {
            "workflow_id": None if workflow is None else workflow.id,
            "matched": workflow is not None,
            "matched_by": None if workflow is None else matched_by(workflow).value,
            "decision_preview": decision_preview(workflow, decision).value,
            "decision_reason": None if decision is None else decision.reason.value,
            "approvers": list(first_step_approvers(workflow)),
            "require_reason": workflow is not None and workflow.require_reason,
        }


def _impact_json(table: TableImpact) -> dict[str, Any]:
    return {
        "name": str(table.table),
        "found": table.found,
        "estimated_rows": table.estimated_rows,
        "deleted": table.deleted,
        "cascade": [
            {"name": str(c.table), "estimated_rows": c.estimated_rows, "depth": c.depth}
            for c in table.cascade
        ],
        "cascade_truncated": table.cascade_truncated,
    }


class RunPreflight:
    """Permission `request.preflight` on the scope; the EXPLAIN also needs
    `request.preflight_explain` there (without it the EXPLAIN is skipped, not refused)."""

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        classifier: SqlClassifier,
        notifier: DispatchNotifier,
        judge: JudgeSql,
        new_id: Callable[[], str] = new_uuid,
        recheck_secs: float = LONG_POLL_RECHECK_SECS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._classifier = classifier
        self._notifier = notifier
        self._judge = judge
        self._new_id = new_id
        self._recheck_secs = recheck_secs

    async def run(self, principal: Principal, body: PreflightInput) -> PreflightReport:
        _validate(body)
        scope = Scope(body.database, body.environment)
        authorize(
            principal,
            Permission.REQUEST_PREFLIGHT,
            database=scope.database,
            environment=scope.environment,
        )
        judgement = await asyncio.to_thread(
            self._judge.judge, scope, Operation.EXECUTE_SELECT, body.sql
        )
        registered = self._settings.is_registered(scope.database, scope.environment)
        blockers = (*_blockers(judgement, registered), *_missing_permissions(principal, judgement))
        review = judgement.review
        needs_approval = isinstance(judgement.decision, NeedsApproval)
        status = preflight_status(
            blockers,
            warnings=0 if review is None else len(review.warnings),
            needs_approval=needs_approval,
        )
        explain = await self._explain(principal, body, judgement, status)
        report = PreflightReport(
            status=status,
            judgement=judgement,
            registered=registered,
            blockers=blockers,
            impact=()
            if judgement.classification is None
            else table_impact(judgement.classification, judgement.schema),
            explain=explain,
            next_actions=_next_actions(status, judgement),
        )
        await asyncio.to_thread(self._audit_attempt, principal, body, report)
        return report

    # --- EXPLAIN through an agent ---------------------------------------------------------

    async def _explain(
        self, principal: Principal, body: PreflightInput, judgement: Judgement, status: Status
    ) -> ExplainReport:
        scope = judgement.scope
        skipped = _skip_reason(principal, body, judgement, status)
        if skipped is not None:
            return ExplainReport(ExplainStatus.SKIPPED, skipped)
        assert judgement.classification is not None  # _skip_reason saw to it
        statements = explain_statements(judgement.classification)
        timeout_ms = min(body.explain_timeout_ms, self._settings.preflight.max_explain_timeout_ms)
        job_ids = [self._new_id() for _ in statements]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with self._notifier.arm([preflight_topic(job_id) for job_id in job_ids]) as waiter:
            queued = await asyncio.to_thread(
                self._enqueue, principal, scope, statements, job_ids, timeout_ms
            )
            if queued is _Queued.NO_AGENT:
                return ExplainReport(
                    ExplainStatus.UNAVAILABLE,
                    f"no healthy agent serves {scope.database}/{scope.environment}",
                )
            if queued is _Queued.RATE_LIMITED:
                await asyncio.to_thread(self._audit_rate_limited, principal, body, judgement)
                limit = self._settings.preflight.max_concurrent_per_user
                raise RateLimited(
                    f"too many preflight EXPLAINs in progress (at most {limit} per user); "
                    "retry when they have finished"
                )
            self._notifier.notify(dispatch_topic(scope))
            deadline = started + timeout_ms / 1000
            jobs = await asyncio.to_thread(self._read_jobs, job_ids)
            while not _all_finished(jobs) and (remaining := deadline - loop.time()) > 0:
                await waiter.wait(min(self._recheck_secs, remaining))
                jobs = await asyncio.to_thread(self._read_jobs, job_ids)
        return _explain_report(statements, jobs)

    def _enqueue(
        self,
        principal: Principal,
        scope: Scope,
        statements: Sequence[tuple[int, str]],
        job_ids: Sequence[str],
        timeout_ms: int,
    ) -> _Queued:
        """Jobs for a healthy agent of the exact scope, within the user's limit, in one
        transaction (the limit is checked where the jobs are written)."""
        now = self._clock.now()
        expires_at = now + timedelta(milliseconds=timeout_ms, seconds=JOB_GRACE_SECS)
        with self._store.write() as session:
            if not any(
                row.record.serves(scope)
                and derived_status(row.record, now) is DerivedStatus.HEALTHY
                for row in session.work.list_agents()
            ):
                return _Queued.NO_AGENT
            outstanding = session.work.outstanding_preflight_jobs(principal.subject_id, now)
            if outstanding >= self._settings.preflight.max_concurrent_per_user:
                return _Queued.RATE_LIMITED
            for position, ((_, sql), job_id) in enumerate(zip(statements, job_ids, strict=True)):
                session.work.insert_preflight_job(
                    PreflightJobRecord(
                        id=job_id,
                        requester=principal.subject_id,
                        database=scope.database,
                        environment=scope.environment,
                        sql=sql,
                        expires_at=expires_at,
                        # One microsecond apart: agents take them in statement order.
                        created_at=now + timedelta(microseconds=position),
                    )
                )
        return _Queued.QUEUED

    def _read_jobs(self, job_ids: Sequence[str]) -> list[PreflightJobRecord | None]:
        with self._store.read() as session:
            return [session.work.get_preflight_job(job_id) for job_id in job_ids]

    # --- audit ----------------------------------------------------------------------------

    def _detail(self, body: PreflightInput, judgement: Judgement) -> tuple[str, str | None]:
        return audit_detail(
            body.sql,
            judgement.operation,
            judgement.dialect,
            classifier=self._classifier,
            redaction=self._settings.audit.redaction,
        )

    def _audit_attempt(
        self, principal: Principal, body: PreflightInput, report: PreflightReport
    ) -> None:
        judgement = report.judgement
        fingerprint, raw = self._detail(body, judgement)
        event = audit_event(
            new_id=self._new_id,
            now=self._clock.now(),
            event_type="preflight.attempted",
            category="request",
            actor=principal,
            outcome="denied" if report.status is Status.BLOCKED else "success",
            resource_type="preflight",
            operation=judgement.operation.value,
            database=judgement.scope.database,
            environment=judgement.scope.environment,
            detail_fingerprint=fingerprint,
            detail_raw=raw,
            client_ip=body.client_ip,
            metadata={
                "status": report.status.value,
                "risk": None if judgement.risk is None else judgement.risk.level.value,
                "blockers": [blocker.code for blocker in report.blockers],
                "explain": report.explain.status.value,
            },
        )
        with self._store.write() as session:
            session.audit.append(event)

    def _audit_rate_limited(
        self, principal: Principal, body: PreflightInput, judgement: Judgement
    ) -> None:
        fingerprint, raw = self._detail(body, judgement)
        event = audit_event(
            new_id=self._new_id,
            now=self._clock.now(),
            event_type="preflight.rate_limited",
            category="request",
            actor=principal,
            outcome="denied",
            resource_type="preflight",
            operation=judgement.operation.value,
            database=judgement.scope.database,
            environment=judgement.scope.environment,
            detail_fingerprint=fingerprint,
            detail_raw=raw,
            client_ip=body.client_ip,
            metadata={"max_concurrent_per_user": self._settings.preflight.max_concurrent_per_user},
        )
        with self._store.write() as session:
            session.audit.append(event)


class _Queued(StrEnum):
    QUEUED = "queued"
    NO_AGENT = "no_agent"
    RATE_LIMITED = "rate_limited"


def _validate(body: PreflightInput) -> None:
    """The limits create applies (names, the 100 KB cap), and a positive wait."""
    for kind, name in (("database", body.database), ("environment", body.environment)):
        problem = scope_name_problem(kind, name, wildcard=False)
        if problem is not None:
            raise Validation(problem)
    if utf8_len(body.sql) > MAX_DETAIL_BYTES:
        raise Validation("query too long (max 100KB)")
    if body.explain_timeout_ms < 1:
        raise Validation("explain_timeout_ms must be at least 1")


def _blockers(judgement: Judgement, registered: bool) -> tuple[Blocker, ...]:
    """Everything create would refuse the text for, each with how to fix it."""
    scope = judgement.scope
    found: list[Blocker] = []
    classification = judgement.classification
    if classification is not None and classification.is_rejected:
        found.append(
            Blocker(
                "rejected",
                classification.rejected_reason or "SQL rejected",
                "remove or rewrite the refused statement; it is never accepted as a request",
            )
        )
    if classification is not None and classification.parse_failed:
        found.append(
            Blocker(
                "parse_failed",
                PARSE_FAILED,
                f"check the syntax for the {judgement.dialect} dialect of {scope}",
            )
        )
    review = judgement.review
    if review is not None:
        found.extend(
            Blocker(
                f"review.{finding.rule.value}",
                finding.message,
                f"the SQL review policy {review.policy_id} blocks {finding.rule.value}: "
                "change the statement so it no longer trips the rule",
            )
            for finding in review.blocking
        )
    if not registered:
        found.append(
            Blocker(
                "scope_not_registered",
                f"database '{scope.database}' not registered in environment '{scope.environment}'",
                "use a registered database and environment (dbward databases lists them)",
            )
        )
    elif judgement.workflow is None:
        found.append(
            Blocker(
                "no_workflow",
                f"no workflow configured for {scope.database}/{scope.environment} "
                f"({judgement.operation.value})",
                "ask an administrator for a [[workflows]] entry covering this scope and operation",
            )
        )
    return tuple(found)


def _missing_permissions(principal: Principal, judgement: Judgement) -> tuple[Blocker, ...]:
    """What create would refuse with 403: the permissions this SQL needs that the caller
    lacks in the scope (the same rule create checks, `permissions_to_create`)."""
    scope = judgement.scope
    missing = [
        permission
        for permission in permissions_to_create(judgement.operation, judgement.classification)
        if not has_permission(principal, permission, scope.database, scope.environment)
    ]
    return tuple(
        Blocker(
            "missing_permission",
            f"you lack {permission.value} on {scope.database}/{scope.environment}",
            f"ask an administrator for a role with {permission.value} in this scope",
        )
        for permission in missing
    )


def _skip_reason(
    principal: Principal, body: PreflightInput, judgement: Judgement, status: Status
) -> str | None:
    """Why no EXPLAIN is attempted, or None to attempt it."""
    scope = judgement.scope
    if status is Status.BLOCKED or judgement.classification is None:
        return "the SQL is blocked"
    if not body.include_explain:
        return "not requested"
    if not has_permission(
        principal, Permission.REQUEST_PREFLIGHT_EXPLAIN, scope.database, scope.environment
    ):
        return f"permission {Permission.REQUEST_PREFLIGHT_EXPLAIN} is missing on {scope}"
    if judgement.workflow is not None and not judgement.workflow.explain:
        return "the workflow turns EXPLAIN off"
    if not explain_statements(judgement.classification):
        return "no statement has a plan to show (only queries and row writes are explained)"
    return None


def _all_finished(jobs: Sequence[PreflightJobRecord | None]) -> bool:
    live = (PreflightStatus.PENDING, PreflightStatus.CLAIMED)
    return all(job is None or job.status not in live for job in jobs)


def _explain_report(
    statements: Sequence[tuple[int, str]], jobs: Sequence[PreflightJobRecord | None]
) -> ExplainReport:
    plans: list[tuple[int, Any]] = []
    errors: list[tuple[int, str]] = []
    unanswered = 0
    for (number, _), job in zip(statements, jobs, strict=True):
        if job is not None and job.status is PreflightStatus.COMPLETED:
            plans.append((number, json.loads(job.result_json or "null")))
        elif job is not None and job.status is PreflightStatus.ERROR:
            errors.append((number, job.error_message or "EXPLAIN failed"))
        else:
            unanswered += 1
    if unanswered:
        return ExplainReport(
            ExplainStatus.TIMEOUT,
            f"{unanswered} of {len(statements)} plans did not arrive in time",
            tuple(plans),
            tuple(errors),
        )
    if errors:
        return ExplainReport(ExplainStatus.ERROR, None, tuple(plans), tuple(errors))
    return ExplainReport(ExplainStatus.OK, None, tuple(plans))


def _next_actions(status: Status, judgement: Judgement) -> tuple[str, ...]:
    if status is Status.BLOCKED:
        return ("fix what blocks it (see fix_hints), then run the preflight again",)
    approvers = first_step_approvers(judgement.workflow)
    if isinstance(judgement.decision, NeedsApproval):
        who = ", ".join(approvers) or "the workflow's approvers"
        return (f"submit it with dbward execute; it will wait for approval by {who}",)
    return ("submit it with dbward execute; it will run without approval",)
