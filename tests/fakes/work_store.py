"""The work store in memory: one fake per aggregate over a shared `WorkState` of dicts.

Each conditional update answers what the SQL adapter's rowcount answers (won or lost, or
how many rows changed), and each listing orders and pages like its SQL query;
`tests/contracts/test_work_store.py` runs the same behaviour tests on these fakes and on
`adapters.store.work` (SQLite and PostgreSQL), so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from application.server.ports.work.agents import AgentRow, AgentUpsert
from application.server.ports.work.databases import SchemaSnapshot
from application.server.ports.work.executions import (
    LEASE_EXPIRED_MESSAGE,
    LIVE_EXECUTION_STATUSES,
    RESULT_PURGED,
    RESULT_STORED,
    ExecutionAlreadyClaimed,
    ExecutionCompletion,
    ExecutionRecord,
    ExecutionStatus,
    ListedResult,
    ResultQuery,
    ResultSummary,
)
from application.server.ports.work.explain_jobs import (
    DryRunJobRecord,
    DryRunOutcome,
    DryRunStatus,
    PreflightJobRecord,
    PreflightOutcome,
    PreflightStatus,
)
from application.server.ports.work.requests import (
    NO_CHANGES,
    DuplicateIdempotencyKey,
    RequestFilters,
    RequestRecord,
    RequestUpdate,
    RequestViewer,
)
from domain.server.approvals import Approval, ApprovalAction
from domain.server.execution_policies import MIGRATION_MUTATIONS
from domain.server.request_lifecycle import TERMINAL_STATUSES, RequestStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

_Record = TypeVar("_Record")


@dataclass
class WorkState:
    databases: set[Scope] = field(default_factory=set)
    requests: dict[str, RequestRecord] = field(default_factory=dict)
    #: request id → (step_index, selector) rows
    pending_approvers: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    approvals: list[Approval] = field(default_factory=list)
    executions: dict[str, ExecutionRecord] = field(default_factory=dict)
    results: dict[str, ResultSummary] = field(default_factory=dict)
    #: Keyed by (token subject, agent_id), as the registry is.
    agents: dict[tuple[str, str], AgentRow] = field(default_factory=dict)
    snapshots: dict[Scope, SchemaSnapshot] = field(default_factory=dict)
    dry_runs: dict[str, DryRunJobRecord] = field(default_factory=dict)
    preflights: dict[str, PreflightJobRecord] = field(default_factory=dict)


def _update_if(
    table: dict[str, _Record], key: str, condition: Callable[[_Record], bool], **changes: Any
) -> bool:
    """`UPDATE … WHERE id = key AND condition`: True when the row was there and matched."""
    row = table.get(key)
    if row is None or not condition(row):
        return False
    table[key] = replace(row, **changes)  # type: ignore[type-var]
    return True


class _FakeRepository:
    def __init__(self, state: WorkState | None = None) -> None:
        self.state = state if state is not None else WorkState()


class FakeRequestRepository(_FakeRepository):
    def insert_request(self, record: RequestRecord) -> None:
        if record.idempotency_key is not None and self.find_idempotent(
            record.requester, record.idempotency_key
        ):
            raise DuplicateIdempotencyKey(record.idempotency_key)
        self.state.requests[record.id] = record

    def get_request(self, request_id: str) -> RequestRecord | None:
        return self.state.requests.get(request_id)

    def find_idempotent(self, requester: str, idempotency_key: str) -> RequestRecord | None:
        for record in self.state.requests.values():
            if (record.requester, record.idempotency_key) == (requester, idempotency_key):
                return record
        return None

    def list_requests(
        self, filters: RequestFilters, *, limit: int, offset: int
    ) -> tuple[list[RequestRecord], int]:
        found = [
            r
            for r in self.state.requests.values()
            if filters.requester in (None, r.requester)
            and filters.status in (None, r.status)
            and (filters.visible_to is None or self._visible(r, filters.visible_to))
            and (
                filters.awaiting_selectors is None or self._awaiting(r, filters.awaiting_selectors)
            )
        ]
        found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return found[offset : offset + limit], len(found)

    def _awaiting(self, record: RequestRecord, selectors: Sequence[str]) -> bool:
        return record.status is RequestStatus.PENDING and any(
            selector in selectors for _, selector in self.state.pending_approvers.get(record.id, [])
        )

    def _visible(self, record: RequestRecord, viewer: RequestViewer) -> bool:
        return (
            record.requester == viewer.subject_id
            or self._awaiting(record, viewer.selectors)
            or any(
                a.request_id == record.id and a.actor_id == viewer.subject_id
                for a in self.state.approvals
            )
        )

    def update_request_status(
        self,
        request_id: str,
        *,
        allowed_from: Collection[RequestStatus],
        to: RequestStatus,
        now: datetime,
        changes: RequestUpdate = NO_CHANGES,
        updated_before: datetime | None = None,
    ) -> bool:
        values: dict[str, Any] = {"status": to, "updated_at": now}
        if changes.pre_dispatch_status is not None:
            values["pre_dispatch_status"] = changes.pre_dispatch_status
        elif changes.clear_pre_dispatch_status:
            values["pre_dispatch_status"] = None
        for name in ("resolved_at", "expires_at", "cancelled_by", "cancel_reason"):
            if getattr(changes, name) is not None:
                values[name] = getattr(changes, name)
        return _update_if(
            self.state.requests,
            request_id,
            lambda r: (
                r.status in allowed_from
                and (updated_before is None or r.updated_at < updated_before)
            ),
            **values,
        )

    def replace_pending_approvers(
        self, request_id: str, step_index: int, selectors: Sequence[str]
    ) -> None:
        unique = dict.fromkeys(selectors)
        self.state.pending_approvers[request_id] = [(step_index, s) for s in unique]

    def pending_approvers(self, request_id: str) -> list[tuple[int, str]]:
        return sorted(self.state.pending_approvers.get(request_id, []))

    def dispatched_requests(
        self, scopes: Collection[Scope], operations: Collection[Operation], limit: int
    ) -> list[RequestRecord]:
        found = [
            r
            for r in self.state.requests.values()
            if r.status is RequestStatus.DISPATCHED
            and r.scope in scopes
            and (not operations or r.operation in operations)
        ]
        return sorted(found, key=lambda r: (r.updated_at, r.id))[: max(limit, 0)]

    def lock_migrations(self, scope: Scope) -> None:
        pass  # one fake, one thread: nothing to serialise

    def migration_active(self, scope: Scope, exclude_request_id: str) -> bool:
        return any(
            r.scope == scope
            and r.id != exclude_request_id
            and r.status is RequestStatus.RUNNING
            and r.operation in MIGRATION_MUTATIONS
            for r in self.state.requests.values()
        )

    def stale_dispatched(self, updated_before: datetime, limit: int) -> list[RequestRecord]:
        found = [
            r
            for r in self.state.requests.values()
            if r.status is RequestStatus.DISPATCHED and r.updated_at < updated_before
        ]
        return sorted(found, key=lambda r: r.updated_at)[:limit]

    def expirable_requests(
        self, statuses: Collection[RequestStatus], now: datetime, limit: int
    ) -> list[RequestRecord]:
        found = [
            r
            for r in self.state.requests.values()
            if r.status in statuses and r.expires_at is not None and r.expires_at < now
        ]
        return sorted(found, key=lambda r: r.expires_at or now)[:limit]

    def purgeable_requests(
        self, statuses: Collection[RequestStatus], updated_before: datetime, limit: int
    ) -> list[RequestRecord]:
        found = [
            r
            for r in self.state.requests.values()
            if r.status in statuses and r.updated_at < updated_before
        ]
        return sorted(found, key=lambda r: (r.updated_at, r.id))[:limit]

    def delete_request(
        self,
        request_id: str,
        *,
        allowed_from: Collection[RequestStatus],
        updated_before: datetime,
    ) -> bool:
        record = self.state.requests.get(request_id)
        if record is None or record.status not in allowed_from:
            return False
        if not record.updated_at < updated_before:
            return False
        del self.state.requests[request_id]
        # ON DELETE CASCADE: every row that refers to the request goes with it.
        state = self.state
        state.pending_approvers.pop(request_id, None)
        state.approvals[:] = [a for a in state.approvals if a.request_id != request_id]
        for table in (state.executions, state.results, state.dry_runs):
            for key in [k for k, row in table.items() if row.request_id == request_id]:
                del table[key]
        return True


class FakeApprovalRepository(_FakeRepository):
    def insert_approval(self, approval: Approval) -> bool:
        if approval.action is ApprovalAction.APPROVE and any(
            a.action is ApprovalAction.APPROVE
            and (a.request_id, a.actor_id, a.step_index)
            == (approval.request_id, approval.actor_id, approval.step_index)
            for a in self.state.approvals
        ):
            return False
        self.state.approvals.append(approval)
        return True

    def approvals_for_request(self, request_id: str) -> list[Approval]:
        found = [a for a in self.state.approvals if a.request_id == request_id]
        return sorted(found, key=lambda a: (a.created_at, a.id))


class FakeExecutionRepository(_FakeRepository):
    def insert_execution(self, record: ExecutionRecord) -> None:
        if record.status is ExecutionStatus.CLAIMED and any(
            e.request_id == record.request_id and e.status is ExecutionStatus.CLAIMED
            for e in self.state.executions.values()
        ):
            raise ExecutionAlreadyClaimed(record.request_id)
        self.state.executions[record.id] = record

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return self.state.executions.get(execution_id)

    def list_executions(self, request_id: str, limit: int) -> list[ExecutionRecord]:
        found = [e for e in self.state.executions.values() if e.request_id == request_id]
        return sorted(found, key=lambda e: (e.created_at, e.id), reverse=True)[:limit]

    def count_executions(self, request_id: str) -> int:
        return sum(1 for e in self.state.executions.values() if e.request_id == request_id)

    def newer_execution_exists(self, execution: ExecutionRecord) -> bool:
        return any(
            other.request_id == execution.request_id
            and other.id != execution.id
            and other.created_at >= execution.created_at
            for other in self.state.executions.values()
        )

    def extend_lease(self, execution_id: str, lease_expires_at: datetime) -> bool:
        return _update_if(
            self.state.executions,
            execution_id,
            lambda e: e.status is ExecutionStatus.CLAIMED,
            lease_expires_at=lease_expires_at,
        )

    def complete_execution(self, execution_id: str, completion: ExecutionCompletion) -> bool:
        def may_complete(e: ExecutionRecord) -> bool:
            if completion.late:
                return e.lost_by_lease and not self.newer_execution_exists(e)
            return e.status in LIVE_EXECUTION_STATUSES

        return _update_if(
            self.state.executions,
            execution_id,
            may_complete,
            status=completion.status,
            finished_at=completion.finished_at,
            error_message=completion.error_message,
        )

    def expired_leases(self, now: datetime, limit: int) -> list[ExecutionRecord]:
        found = [
            e
            for e in self.state.executions.values()
            if e.status in LIVE_EXECUTION_STATUSES and e.lease_expires_at < now
        ]
        return sorted(found, key=lambda e: e.lease_expires_at)[:limit]

    def fail_expired_lease(self, execution_id: str, now: datetime) -> bool:
        return _update_if(
            self.state.executions,
            execution_id,
            lambda e: e.status in LIVE_EXECUTION_STATUSES and e.lease_expires_at < now,
            status=ExecutionStatus.FAILED,
            finished_at=now,
            error_message=LEASE_EXPIRED_MESSAGE,
        )

    def insert_result(self, summary: ResultSummary) -> None:
        self.state.results[summary.id] = summary

    def latest_result(self, request_id: str) -> ResultSummary | None:
        found = [r for r in self.state.results.values() if r.request_id == request_id]
        return max(found, key=lambda r: (r.stored_at, r.id), default=None)

    def result_for_execution(self, execution_id: str) -> ResultSummary | None:
        found = (r for r in self.state.results.values() if r.execution_id == execution_id)
        return next(found, None)

    def executions_with_results(self, execution_ids: Collection[str]) -> set[str]:
        return {
            r.execution_id
            for r in self.state.results.values()
            if r.execution_id in execution_ids and r.has_stored_content
        }

    def results_of_request(self, request_id: str) -> list[ResultSummary]:
        found = [r for r in self.state.results.values() if r.request_id == request_id]
        return sorted(found, key=lambda r: (r.stored_at, r.id))

    def list_results(self, query: ResultQuery, *, limit: int, offset: int) -> list[ListedResult]:
        def visible(request: RequestRecord) -> bool:
            if request.scope not in query.scopes:
                return False
            if query.database not in (None, request.database):
                return False
            if query.environment not in (None, request.environment):
                return False
            approved = any(
                a.request_id == request.id
                and a.actor_id == query.subject
                and a.action is ApprovalAction.APPROVE
                for a in self.state.approvals
            )
            return (
                request.scope in query.every_result_in
                or request.requester == query.subject
                or approved
                or any(s in request.share_with for s in query.share_selectors)
            )

        found = [
            ListedResult(summary=r, request=self.state.requests[r.request_id])
            for r in self.state.results.values()
            if visible(self.state.requests[r.request_id])
        ]
        found.sort(key=lambda item: (item.summary.stored_at, item.summary.id), reverse=True)
        return found[offset : offset + limit]

    def expired_results(self, now: datetime, limit: int) -> list[ResultSummary]:
        found = [
            r
            for r in self.state.results.values()
            if r.status == RESULT_STORED
            and r.storage_key
            and r.expires_at is not None
            and r.expires_at < now
        ]
        return sorted(found, key=lambda r: (r.expires_at or now, r.id))[:limit]

    def mark_result_purged(self, result_id: str) -> bool:
        return _update_if(
            self.state.results, result_id, lambda r: r.status == RESULT_STORED, status=RESULT_PURGED
        )


class FakeAgentRepository(_FakeRepository):
    def subject_agents(self, subject_id: str) -> list[AgentRow]:
        return [
            row for (subject, _), row in sorted(self.state.agents.items()) if subject == subject_id
        ]

    def upsert_agent(self, upsert: AgentUpsert, now: datetime) -> bool:
        record = upsert.record
        key = (record.id, record.agent_id)
        existing = self.state.agents.get(key)
        self.state.agents[key] = AgentRow(
            record=record,
            operations=upsert.operations,
            token_id=upsert.token_id,
            created_at=existing.created_at if existing is not None else now,
        )
        return existing is None

    def list_agents(self) -> list[AgentRow]:
        return [row for _, row in sorted(self.state.agents.items())]

    def delete_agents_unseen_since(self, cutoff: datetime, limit: int) -> list[AgentRow]:
        def last_seen(row: AgentRow) -> datetime:
            assert row.record.last_seen_at is not None
            return row.record.last_seen_at

        unseen = [
            (key, row)
            for key, row in self.state.agents.items()
            if row.record.last_seen_at is not None and row.record.last_seen_at < cutoff
        ]
        unseen.sort(key=lambda item: (last_seen(item[1]), item[0]))
        for key, _ in unseen[:limit]:
            del self.state.agents[key]
        return [row for _, row in unseen[:limit]]


class FakeDatabaseRepository(_FakeRepository):
    def ensure_database(self, scope: Scope, now: datetime) -> None:
        self.state.databases.add(scope)

    def upsert_schema_snapshot(self, snapshot: SchemaSnapshot) -> None:
        self.state.snapshots[Scope(snapshot.database, snapshot.environment)] = snapshot

    def get_schema_snapshot(self, scope: Scope) -> SchemaSnapshot | None:
        return self.state.snapshots.get(scope)


class FakeExplainJobRepository(_FakeRepository):
    # dry-run jobs
    def insert_dry_run_job(self, job: DryRunJobRecord) -> None:
        self.state.dry_runs[job.id] = job

    def get_dry_run_job(self, job_id: str) -> DryRunJobRecord | None:
        return self.state.dry_runs.get(job_id)

    def dry_run_jobs_for_request(self, request_id: str) -> list[DryRunJobRecord]:
        found = [j for j in self.state.dry_runs.values() if j.request_id == request_id]
        return sorted(found, key=lambda j: (j.created_at, j.id))

    def _request_finished(self, job: DryRunJobRecord, finished: Collection[RequestStatus]) -> bool:
        request = self.state.requests.get(job.request_id)
        return request is not None and request.status in finished

    def pending_dry_run_jobs(self, scopes: Collection[Scope], limit: int) -> list[DryRunJobRecord]:
        found = [
            j
            for j in self.state.dry_runs.values()
            if j.status is DryRunStatus.PENDING
            and j.scope in scopes
            and not self._request_finished(j, TERMINAL_STATUSES)
        ]
        return sorted(found, key=lambda j: (j.created_at, j.id))[: max(limit, 0)]

    def claim_dry_run_job(
        self, job_id: str, agent_id: str, claim_token: str, now: datetime
    ) -> bool:
        return _update_if(
            self.state.dry_runs,
            job_id,
            lambda j: j.status is DryRunStatus.PENDING,
            status=DryRunStatus.CLAIMED,
            claimed_by=agent_id,
            claimed_at=now,
            claim_token=claim_token,
        )

    def finish_dry_run_job(
        self, job_id: str, agent_id: str, claim_token: str, outcome: DryRunOutcome
    ) -> bool:
        return _update_if(
            self.state.dry_runs,
            job_id,
            lambda j: (
                (j.status, j.claimed_by, j.claim_token)
                == (DryRunStatus.CLAIMED, agent_id, claim_token)
            ),
            status=outcome.status,
            result_json=outcome.result_json,
            error_message=outcome.error_message,
            completed_at=outcome.completed_at,
        )

    def release_stale_dry_run_claims(self, claimed_before: datetime) -> int:
        stale = [
            j.id
            for j in self.state.dry_runs.values()
            if j.status is DryRunStatus.CLAIMED
            and j.claimed_at is not None
            and j.claimed_at < claimed_before
        ]
        for job_id in stale:
            self.state.dry_runs[job_id] = replace(
                self.state.dry_runs[job_id],
                status=DryRunStatus.PENDING,
                claimed_by=None,
                claimed_at=None,
                claim_token=None,
            )
        return len(stale)

    def fail_orphaned_dry_runs(
        self, finished: Collection[RequestStatus], message: str, now: datetime
    ) -> int:
        orphans = [
            j.id
            for j in self.state.dry_runs.values()
            if j.status is DryRunStatus.PENDING and self._request_finished(j, finished)
        ]
        for job_id in orphans:
            self.state.dry_runs[job_id] = replace(
                self.state.dry_runs[job_id],
                status=DryRunStatus.FAILED,
                error_message=message,
                completed_at=now,
            )
        return len(orphans)

    # preflight jobs
    def insert_preflight_job(self, job: PreflightJobRecord) -> None:
        self.state.preflights[job.id] = job

    def get_preflight_job(self, job_id: str) -> PreflightJobRecord | None:
        return self.state.preflights.get(job_id)

    def _pending_preflights(
        self, scopes: Collection[Scope], now: datetime
    ) -> list[PreflightJobRecord]:
        found = [
            j
            for j in self.state.preflights.values()
            if j.status is PreflightStatus.PENDING and j.expires_at > now and j.scope in scopes
        ]
        return sorted(found, key=lambda j: (j.created_at, j.id))

    def has_pending_preflight(self, scopes: Collection[Scope], now: datetime) -> bool:
        return bool(self._pending_preflights(scopes, now))

    def outstanding_preflight_jobs(self, requester: str, now: datetime) -> int:
        live = (PreflightStatus.PENDING, PreflightStatus.CLAIMED)
        return sum(
            1
            for j in self.state.preflights.values()
            if j.requester == requester and j.status in live and j.expires_at > now
        )

    def claim_preflight_jobs(
        self,
        scopes: Collection[Scope],
        agent_id: str,
        claim_token: str,
        now: datetime,
        limit: int,
    ) -> list[PreflightJobRecord]:
        claimed = [
            replace(
                job,
                status=PreflightStatus.CLAIMED,
                claimed_by=agent_id,
                claimed_at=now,
                claim_token=claim_token,
            )
            for job in self._pending_preflights(scopes, now)[: max(limit, 0)]
        ]
        self.state.preflights.update((job.id, job) for job in claimed)
        return claimed

    def finish_preflight_job(
        self, job_id: str, agent_id: str, claim_token: str, outcome: PreflightOutcome
    ) -> bool:
        return _update_if(
            self.state.preflights,
            job_id,
            lambda j: (
                (j.status, j.claimed_by, j.claim_token)
                == (PreflightStatus.CLAIMED, agent_id, claim_token)
                and j.expires_at > outcome.completed_at
            ),
            status=outcome.status,
            result_json=outcome.result_json,
            error_message=outcome.error_message,
            completed_at=outcome.completed_at,
        )

    def expire_preflight_jobs(self, now: datetime) -> int:
        live = (PreflightStatus.PENDING, PreflightStatus.CLAIMED)
        due = [
            j.id for j in self.state.preflights.values() if j.status in live and j.expires_at <= now
        ]
        for job_id in due:
            self.state.preflights[job_id] = replace(
                self.state.preflights[job_id], status=PreflightStatus.EXPIRED
            )
        return len(due)


class FakeWorkRepository(
    FakeRequestRepository,
    FakeApprovalRepository,
    FakeExecutionRepository,
    FakeAgentRepository,
    FakeDatabaseRepository,
    FakeExplainJobRepository,
):
    """`WorkRepository` in memory: every aggregate's fake over one `WorkState`."""
