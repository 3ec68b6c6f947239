"""`WorkRepository` over SQLAlchemy Core: requests, executions, results, agents, EXPLAIN jobs.

Portable SQL only (SQLite and PostgreSQL share every statement): JSON as TEXT, timestamps
as fixed-width TEXT (`domain.shared.timestamps`, so string order is time order), and every status
change a conditional `UPDATE … WHERE status IN (…)` whose rowcount says who won. Inserts
that may collide run in a savepoint, so a lost race does not spoil the caller's
transaction (PostgreSQL aborts the whole transaction on an error otherwise).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    and_,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapters.store.schema import (
    agents,
    databases,
    dry_run_jobs,
    executions,
    preflight_jobs,
    request_pending_approvers,
    requests,
    results,
    schema_snapshots,
)
from application.server.ports.work import (
    LEASE_EXPIRED_MESSAGE,
    LIVE_EXECUTION_STATUSES,
    NO_CHANGES,
    AgentRow,
    AgentUpsert,
    DryRunJobRecord,
    DryRunOutcome,
    DryRunStatus,
    DuplicateIdempotencyKey,
    ExecutionAlreadyClaimed,
    ExecutionCompletion,
    ExecutionRecord,
    ExecutionStatus,
    PreflightJobRecord,
    PreflightOutcome,
    PreflightStatus,
    RequestFilters,
    RequestRecord,
    RequestUpdate,
    ResultSummary,
    SchemaSnapshot,
)
from domain.server.agent_registry import AgentRecord, AgentState
from domain.server.execution_policies import MIGRATION_MUTATIONS
from domain.server.request_lifecycle import TERMINAL_STATUSES, RequestStatus, parse_status
from domain.shared.jobs import ActiveJobStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp, parse_timestamp

_R = TypeVar("_R")

#: Prefix of the `pg_advisory_xact_lock` name that serialises migration claims per database.
MIGRATION_LOCK_PREFIX = "dbward.migrate:"


def migration_lock_key(scope: Scope) -> int:
    """The signed 64-bit advisory-lock key for `scope`: the first 8 bytes of
    sha256("dbward.migrate:" + "<database>:<environment>")."""
    name = MIGRATION_LOCK_PREFIX + f"{scope.database}:{scope.environment}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_LIVE = tuple(status.value for status in LIVE_EXECUTION_STATUSES)


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _parse_ts(stored: str | None) -> datetime | None:
    return None if stored is None else parse_timestamp(stored)


def _database_id(scope: Scope) -> str:
    return f"{scope.database}:{scope.environment}"


def _split_database_id(database_id: str) -> tuple[str, str]:
    database, _, environment = database_id.partition(":")
    return database, environment


def _scope_filter(
    database: ColumnElement[Any], environment: ColumnElement[Any], scopes: Collection[Scope]
) -> ColumnElement[bool]:
    """`(database = ? AND environment = ?) OR …`; false for no scopes."""
    if not scopes:
        return false()
    return or_(*(and_(database == s.database, environment == s.environment) for s in scopes))


def _scopes_json(scopes: Iterable[Scope]) -> str:
    return json.dumps([{"database": s.database, "environment": s.environment} for s in scopes])


def _parse_scopes(raw: str | None) -> tuple[Scope, ...]:
    return tuple(Scope(item["database"], item["environment"]) for item in json.loads(raw or "[]"))


# --- row mappers ------------------------------------------------------------------------------


def _request(row: Row[Any]) -> RequestRecord:
    m = row._mapping
    database, environment = _split_database_id(m["database_id"])
    pre = m["pre_dispatch_status"]
    return RequestRecord(
        id=m["id"],
        requester=m["requester"],
        operation=Operation(m["operation"]),
        database=database,
        environment=environment,
        detail=m["detail"],
        status=parse_status(m["status"]),
        pre_dispatch_status=None if pre is None else parse_status(pre),
        emergency=bool(m["emergency"]),
        reason=m["reason"],
        idempotency_key=m["idempotency_key"],
        idempotency_fingerprint=m["idempotency_fingerprint"],
        metadata_json=m["metadata_json"],
        share_with=tuple(json.loads(m["share_with_json"] or "[]")),
        no_store=bool(m["no_store"]),
        workflow_snapshot_json=m["workflow_snapshot_json"],
        decision_trace_json=m["decision_trace_json"],
        execution_plan_json=m["execution_plan_json"],
        cancelled_by=m["cancelled_by"],
        cancel_reason=m["cancel_reason"],
        audit_incomplete=bool(m["audit_incomplete"]),
        created_at=parse_timestamp(m["created_at"]),
        updated_at=parse_timestamp(m["updated_at"]),
        resolved_at=_parse_ts(m["resolved_at"]),
        expires_at=_parse_ts(m["expires_at"]),
    )


def _execution(row: Row[Any]) -> ExecutionRecord:
    m = row._mapping
    return ExecutionRecord(
        id=m["id"],
        request_id=m["request_id"],
        agent_id=m["agent_id"],
        status=ExecutionStatus(m["status"]),
        token=m["token"],
        lease_secs=m["lease_secs"],
        lease_expires_at=parse_timestamp(m["lease_expires_at"]),
        started_at=parse_timestamp(m["started_at"]),
        finished_at=_parse_ts(m["finished_at"]),
        error_message=m["error_message"],
        created_at=parse_timestamp(m["created_at"]),
    )


def _result(row: Row[Any]) -> ResultSummary:
    m = row._mapping
    return ResultSummary(
        id=m["id"],
        request_id=m["request_id"],
        execution_id=m["execution_id"],
        success=bool(m["success"]),
        rows_affected=m["rows_affected"],
        duration_ms=m["duration_ms"],
        truncated=bool(m["truncated"]),
        truncation_reason=m["truncation_reason"],
        error_message=m["error_message"],
        storage_backend=m["storage_backend"],
        storage_key=m["storage_key"],
        content_length=m["content_length"],
        checksum_sha256=m["checksum_sha256"],
        retention_days=m["retention_days"],
        status=m["status"],
        stored_at=parse_timestamp(m["stored_at"]),
        expires_at=_parse_ts(m["expires_at"]),
    )


def _agent(row: Row[Any]) -> AgentRow:
    m = row._mapping
    agent_ids = tuple(json.loads(m["agent_ids_json"] or "[]"))
    record = AgentRecord(
        id=m["id"],
        agent_id=agent_ids[-1] if agent_ids else None,
        scopes=_parse_scopes(m["databases_json"]),
        status=AgentState(m["status"]),
        max_concurrent=m["max_concurrent"],
        in_flight=m["in_flight"],
        uptime_secs=m["uptime_secs"],
        active_jobs=tuple(
            ActiveJobStatus(
                request_id=job["request_id"],
                operation=job["operation"],
                elapsed_secs=job["elapsed_secs"],
            )
            for job in json.loads(m["active_jobs_json"] or "[]")
        ),
        last_seen_at=_parse_ts(m["last_seen_at"]),
        degraded_scopes=_parse_scopes(m["degraded_scopes_json"]),
        agent_version=m["agent_version"],
        agent_build=m["agent_build"],
    )
    return AgentRow(
        record=record,
        operations=tuple(Operation(op) for op in json.loads(m["operations_json"] or "[]")),
        token_id=m["token_id"],
        agent_ids=agent_ids,
        created_at=_parse_ts(m["created_at"]),
    )


def _snapshot(row: Row[Any]) -> SchemaSnapshot:
    m = row._mapping
    return SchemaSnapshot(
        database=m["database_name"],
        environment=m["environment"],
        status=m["status"],
        dialect=m["dialect"],
        collected_at=parse_timestamp(m["collected_at"]),
        agent_id=m["agent_id"],
        snapshot_json=m["snapshot_json"],
        error_message=m["error_message"],
    )


# EXPLAIN jobs (`dry_run_jobs`, `preflight_jobs`) share their columns but for who asked
# (request_id / requester) and how long a preflight job lives (expires_at).


def _job_fields(row: Row[Any]) -> dict[str, Any]:
    """The record fields both EXPLAIN job tables hold, by the record's names."""
    m = row._mapping
    return {
        "id": m["id"],
        "database": m["database_name"],
        "environment": m["environment"],
        "sql": m["sql"],
        "claimed_by": m["claimed_by"],
        "claimed_at": _parse_ts(m["claimed_at"]),
        "claim_token": m["claim_token"],
        "result_json": m["result_json"],
        "error_message": m["error_message"],
        "created_at": parse_timestamp(m["created_at"]),
        "completed_at": _parse_ts(m["completed_at"]),
    }


def _job_columns(job: DryRunJobRecord | PreflightJobRecord) -> dict[str, Any]:
    """The inverse of `_job_fields`, by the tables' column names."""
    return {
        "id": job.id,
        "database_name": job.database,
        "environment": job.environment,
        "sql": job.sql,
        "status": job.status.value,
        "claimed_by": job.claimed_by,
        "claimed_at": _ts(job.claimed_at),
        "claim_token": job.claim_token,
        "result_json": job.result_json,
        "error_message": job.error_message,
        "created_at": format_timestamp(job.created_at),
        "completed_at": _ts(job.completed_at),
    }


def _claim_columns(
    claimed: DryRunStatus | PreflightStatus, agent_id: str, claim_token: str, now: datetime
) -> dict[str, Any]:
    return {
        "status": claimed.value,
        "claimed_by": agent_id,
        "claimed_at": format_timestamp(now),
        "claim_token": claim_token,
    }


def _held_by(
    table: Table,
    job_id: str,
    agent_id: str,
    claim_token: str,
    claimed: DryRunStatus | PreflightStatus,
) -> tuple[ColumnElement[bool], ...]:
    """The job is still claimed, by this agent, under this claim."""
    return (
        table.c.id == job_id,
        table.c.status == claimed.value,
        table.c.claimed_by == agent_id,
        table.c.claim_token == claim_token,
    )


def _outcome_columns(outcome: DryRunOutcome | PreflightOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "result_json": outcome.result_json,
        "error_message": outcome.error_message,
        "completed_at": format_timestamp(outcome.completed_at),
    }


def _dry_run(row: Row[Any]) -> DryRunJobRecord:
    m = row._mapping
    return DryRunJobRecord(
        **_job_fields(row), request_id=m["request_id"], status=DryRunStatus(m["status"])
    )


def _preflight(row: Row[Any]) -> PreflightJobRecord:
    m = row._mapping
    return PreflightJobRecord(
        **_job_fields(row),
        requester=m["requester"],
        status=PreflightStatus(m["status"]),
        expires_at=parse_timestamp(m["expires_at"]),
    )


def _statuses(values: Iterable[RequestStatus]) -> list[str]:
    return sorted(status.value for status in values)


class SqlWorkRepository:
    """Runs in the caller's connection and transaction (one `StoreSession`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _first(self, query: Select[Any], record: Callable[[Row[Any]], _R]) -> _R | None:
        row = self._conn.execute(query).first()
        return None if row is None else record(row)

    def _all(self, query: Select[Any], record: Callable[[Row[Any]], _R]) -> list[_R]:
        return [record(row) for row in self._conn.execute(query)]

    def _insert_or_conflict(self, statement: Any) -> bool:
        """Run an INSERT in a savepoint; False when a constraint refused it."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(statement)
        except IntegrityError:
            return False
        return True

    # --- databases ----------------------------------------------------------------------

    def ensure_database(self, scope: Scope, now: datetime) -> None:
        database_id = _database_id(scope)
        present = self._conn.scalar(select(databases.c.id).where(databases.c.id == database_id))
        if present is not None:
            return
        self._insert_or_conflict(
            insert(databases).values(
                id=database_id,
                name=scope.database,
                environment=scope.environment,
                created_at=format_timestamp(now),
            )
        )

    # --- requests -----------------------------------------------------------------------

    def insert_request(self, record: RequestRecord) -> None:
        values = {
            "id": record.id,
            "requester": record.requester,
            "operation": record.operation.value,
            "database_id": record.database_id,
            "detail": record.detail,
            "status": record.status.value,
            "pre_dispatch_status": None
            if record.pre_dispatch_status is None
            else record.pre_dispatch_status.value,
            "emergency": record.emergency,
            "reason": record.reason,
            "idempotency_key": record.idempotency_key,
            "idempotency_fingerprint": record.idempotency_fingerprint,
            "metadata_json": record.metadata_json,
            "share_with_json": json.dumps(list(record.share_with)),
            "no_store": record.no_store,
            "workflow_snapshot_json": record.workflow_snapshot_json,
            "decision_trace_json": record.decision_trace_json,
            "execution_plan_json": record.execution_plan_json,
            "cancelled_by": record.cancelled_by,
            "cancel_reason": record.cancel_reason,
            "audit_incomplete": record.audit_incomplete,
            "created_at": format_timestamp(record.created_at),
            "updated_at": format_timestamp(record.updated_at),
            "resolved_at": _ts(record.resolved_at),
            "expires_at": _ts(record.expires_at),
        }
        statement = insert(requests).values(**values)
        if record.idempotency_key is None:
            self._conn.execute(statement)
        elif not self._insert_or_conflict(statement):
            raise DuplicateIdempotencyKey(record.idempotency_key)

    def get_request(self, request_id: str) -> RequestRecord | None:
        return self._first(select(requests).where(requests.c.id == request_id), _request)

    def find_idempotent(self, requester: str, idempotency_key: str) -> RequestRecord | None:
        return self._first(
            select(requests).where(
                requests.c.requester == requester,
                requests.c.idempotency_key == idempotency_key,
            ),
            _request,
        )

    def list_requests(
        self, filters: RequestFilters, *, limit: int, offset: int
    ) -> tuple[list[RequestRecord], int]:
        conditions: list[ColumnElement[bool]] = []
        if filters.requester is not None:
            conditions.append(requests.c.requester == filters.requester)
        if filters.status is not None:
            conditions.append(requests.c.status == filters.status.value)
        total = self._conn.scalar(select(func.count()).select_from(requests).where(*conditions))
        page = self._all(
            select(requests)
            .where(*conditions)
            .order_by(requests.c.created_at.desc(), requests.c.id.desc())
            .limit(limit)
            .offset(offset),
            _request,
        )
        return page, int(total or 0)

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
        if not allowed_from:
            return False
        values: dict[str, Any] = {"status": to.value, "updated_at": format_timestamp(now)}
        if changes.pre_dispatch_status is not None:
            values["pre_dispatch_status"] = changes.pre_dispatch_status.value
        elif changes.clear_pre_dispatch_status:
            values["pre_dispatch_status"] = None
        if changes.resolved_at is not None:
            values["resolved_at"] = format_timestamp(changes.resolved_at)
        if changes.expires_at is not None:
            values["expires_at"] = format_timestamp(changes.expires_at)
        if changes.cancelled_by is not None:
            values["cancelled_by"] = changes.cancelled_by
        if changes.cancel_reason is not None:
            values["cancel_reason"] = changes.cancel_reason
        statement = (
            update(requests)
            .where(requests.c.id == request_id, requests.c.status.in_(_statuses(allowed_from)))
            .values(**values)
        )
        if updated_before is not None:
            statement = statement.where(requests.c.updated_at < format_timestamp(updated_before))
        return self._conn.execute(statement).rowcount == 1

    def replace_pending_approvers(
        self, request_id: str, step_index: int, selectors: Sequence[str]
    ) -> None:
        self._conn.execute(
            delete(request_pending_approvers).where(
                request_pending_approvers.c.request_id == request_id
            )
        )
        unique = list(dict.fromkeys(selectors))
        if unique:
            self._conn.execute(
                insert(request_pending_approvers),
                [
                    {"request_id": request_id, "selector": selector, "step_index": step_index}
                    for selector in unique
                ],
            )

    def pending_approvers(self, request_id: str) -> list[tuple[int, str]]:
        rows = self._conn.execute(
            select(request_pending_approvers.c.step_index, request_pending_approvers.c.selector)
            .where(request_pending_approvers.c.request_id == request_id)
            .order_by(request_pending_approvers.c.step_index, request_pending_approvers.c.selector)
        )
        return [(row[0], row[1]) for row in rows]

    def dispatched_requests(
        self, scopes: Collection[Scope], operations: Collection[Operation], limit: int
    ) -> list[RequestRecord]:
        if not scopes or limit <= 0:
            return []
        query = select(requests).where(
            requests.c.status == RequestStatus.DISPATCHED.value,
            requests.c.database_id.in_(sorted(_database_id(s) for s in scopes)),
        )
        if operations:
            query = query.where(requests.c.operation.in_(sorted(op.value for op in operations)))
        return self._all(
            query.order_by(requests.c.updated_at, requests.c.id).limit(limit), _request
        )

    def lock_migrations(self, scope: Scope) -> None:
        # PostgreSQL: a transaction-scoped advisory lock per database, so two replicas'
        # READ COMMITTED `migration_active` checks cannot both see "none running". SQLite
        # needs nothing: BEGIN IMMEDIATE already serialises every writer.
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(select(func.pg_advisory_xact_lock(migration_lock_key(scope))))

    def migration_active(self, scope: Scope, exclude_request_id: str) -> bool:
        query = select(
            exists().where(
                requests.c.database_id == _database_id(scope),
                requests.c.id != exclude_request_id,
                requests.c.status == RequestStatus.RUNNING.value,
                requests.c.operation.in_(sorted(op.value for op in MIGRATION_MUTATIONS)),
            )
        )
        return bool(self._conn.scalar(query))

    def stale_dispatched(self, updated_before: datetime, limit: int) -> list[RequestRecord]:
        return self._all(
            select(requests)
            .where(
                requests.c.status == RequestStatus.DISPATCHED.value,
                requests.c.updated_at < format_timestamp(updated_before),
            )
            .order_by(requests.c.updated_at)
            .limit(limit),
            _request,
        )

    def expirable_requests(
        self, statuses: Collection[RequestStatus], now: datetime, limit: int
    ) -> list[RequestRecord]:
        if not statuses:
            return []
        return self._all(
            select(requests)
            .where(
                requests.c.status.in_(_statuses(statuses)),
                requests.c.expires_at.is_not(None),
                requests.c.expires_at < format_timestamp(now),
            )
            .order_by(requests.c.expires_at)
            .limit(limit),
            _request,
        )

    # --- executions ---------------------------------------------------------------------

    def insert_execution(self, record: ExecutionRecord) -> None:
        statement = insert(executions).values(
            id=record.id,
            request_id=record.request_id,
            agent_id=record.agent_id,
            status=record.status.value,
            token=record.token,
            lease_secs=record.lease_secs,
            lease_expires_at=format_timestamp(record.lease_expires_at),
            started_at=format_timestamp(record.started_at),
            finished_at=_ts(record.finished_at),
            error_message=record.error_message,
            created_at=format_timestamp(record.created_at),
        )
        if not self._insert_or_conflict(statement):
            raise ExecutionAlreadyClaimed(record.request_id)

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return self._first(select(executions).where(executions.c.id == execution_id), _execution)

    def list_executions(self, request_id: str, limit: int) -> list[ExecutionRecord]:
        return self._all(
            select(executions)
            .where(executions.c.request_id == request_id)
            .order_by(executions.c.created_at.desc(), executions.c.id.desc())
            .limit(limit),
            _execution,
        )

    def _newer_than(self, execution_id: str, request_id: str, created_at: str) -> Any:
        """Another execution of the request created at or after this one (a tie counts)."""
        other = executions.alias("other")
        return exists().where(
            other.c.request_id == request_id,
            other.c.id != execution_id,
            other.c.created_at >= created_at,
        )

    def newer_execution_exists(self, execution: ExecutionRecord) -> bool:
        query = select(
            self._newer_than(
                execution.id, execution.request_id, format_timestamp(execution.created_at)
            )
        )
        return bool(self._conn.scalar(query))

    def extend_lease(self, execution_id: str, lease_expires_at: datetime) -> bool:
        result = self._conn.execute(
            update(executions)
            .where(
                executions.c.id == execution_id,
                executions.c.status == ExecutionStatus.CLAIMED.value,
            )
            .values(lease_expires_at=format_timestamp(lease_expires_at))
        )
        return result.rowcount == 1

    def complete_execution(self, execution_id: str, completion: ExecutionCompletion) -> bool:
        values = {
            "status": completion.status.value,
            "finished_at": format_timestamp(completion.finished_at),
            "error_message": completion.error_message,
        }
        statement = update(executions).where(executions.c.id == execution_id)
        if completion.late:
            current = self.get_execution(execution_id)
            if current is None:
                return False
            statement = statement.where(
                executions.c.status == ExecutionStatus.FAILED.value,
                executions.c.error_message == LEASE_EXPIRED_MESSAGE,
                ~self._newer_than(
                    execution_id, current.request_id, format_timestamp(current.created_at)
                ),
            )
        else:
            statement = statement.where(executions.c.status.in_(_LIVE))
        return self._conn.execute(statement.values(**values)).rowcount == 1

    def expired_leases(self, now: datetime, limit: int) -> list[ExecutionRecord]:
        return self._all(
            select(executions)
            .where(
                executions.c.status.in_(_LIVE),
                executions.c.lease_expires_at < format_timestamp(now),
            )
            .order_by(executions.c.lease_expires_at)
            .limit(limit),
            _execution,
        )

    def fail_expired_lease(self, execution_id: str, now: datetime) -> bool:
        stamp = format_timestamp(now)
        result = self._conn.execute(
            update(executions)
            .where(
                executions.c.id == execution_id,
                executions.c.status.in_(_LIVE),
                executions.c.lease_expires_at < stamp,
            )
            .values(
                status=ExecutionStatus.FAILED.value,
                finished_at=stamp,
                error_message=LEASE_EXPIRED_MESSAGE,
            )
        )
        return result.rowcount == 1

    # --- results ------------------------------------------------------------------------

    def insert_result(self, summary: ResultSummary) -> None:
        self._conn.execute(
            insert(results).values(
                id=summary.id,
                request_id=summary.request_id,
                execution_id=summary.execution_id,
                success=summary.success,
                rows_affected=summary.rows_affected,
                duration_ms=summary.duration_ms,
                truncated=summary.truncated,
                truncation_reason=summary.truncation_reason,
                error_message=summary.error_message,
                storage_backend=summary.storage_backend,
                storage_key=summary.storage_key,
                content_length=summary.content_length,
                checksum_sha256=summary.checksum_sha256,
                retention_days=summary.retention_days,
                status=summary.status,
                stored_at=format_timestamp(summary.stored_at),
                expires_at=_ts(summary.expires_at),
            )
        )

    def latest_result(self, request_id: str) -> ResultSummary | None:
        return self._first(
            select(results)
            .where(results.c.request_id == request_id)
            .order_by(results.c.stored_at.desc(), results.c.id.desc())
            .limit(1),
            _result,
        )

    def result_for_execution(self, execution_id: str) -> ResultSummary | None:
        return self._first(select(results).where(results.c.execution_id == execution_id), _result)

    def executions_with_results(self, execution_ids: Collection[str]) -> set[str]:
        if not execution_ids:
            return set()
        rows = self._conn.execute(
            select(results.c.execution_id).where(
                results.c.execution_id.in_(sorted(execution_ids)),
                results.c.storage_key != "",
            )
        )
        return {row[0] for row in rows}

    # --- agents -------------------------------------------------------------------------

    def get_agent(self, agent_id: str) -> AgentRow | None:
        return self._first(select(agents).where(agents.c.id == agent_id), _agent)

    def upsert_agent(self, upsert: AgentUpsert, now: datetime) -> bool:
        record = upsert.record
        existing = self.get_agent(record.id)
        agent_ids = list(existing.agent_ids) if existing is not None else []
        if record.agent_id is not None and record.agent_id not in agent_ids:
            agent_ids.append(record.agent_id)
        values: dict[str, Any] = {
            "token_id": upsert.token_id,
            "databases_json": _scopes_json(record.scopes),
            "operations_json": json.dumps([op.value for op in upsert.operations]),
            "status": record.status.value,
            "max_concurrent": record.max_concurrent,
            "in_flight": record.in_flight,
            "uptime_secs": record.uptime_secs,
            "active_jobs_json": json.dumps(
                [
                    {
                        "request_id": job.request_id,
                        "operation": job.operation,
                        "elapsed_secs": job.elapsed_secs,
                    }
                    for job in record.active_jobs
                ]
            ),
            "agent_version": record.agent_version,
            "agent_build": record.agent_build,
            "agent_ids_json": json.dumps(agent_ids),
            "degraded_scopes_json": _scopes_json(record.degraded_scopes),
            "last_seen_at": _ts(record.last_seen_at),
        }
        if existing is None:
            created = self._insert_or_conflict(
                insert(agents).values(id=record.id, created_at=format_timestamp(now), **values)
            )
            if created:
                return True
        self._conn.execute(update(agents).where(agents.c.id == record.id).values(**values))
        return False

    def list_agents(self) -> list[AgentRow]:
        return self._all(select(agents).order_by(agents.c.id), _agent)

    # --- schema snapshots ---------------------------------------------------------------

    def upsert_schema_snapshot(self, snapshot: SchemaSnapshot) -> None:
        values = {
            "status": snapshot.status,
            "snapshot_json": snapshot.snapshot_json,
            "error_message": snapshot.error_message,
            "dialect": snapshot.dialect,
            "collected_at": format_timestamp(snapshot.collected_at),
            "agent_id": snapshot.agent_id,
        }
        where = (
            schema_snapshots.c.database_name == snapshot.database,
            schema_snapshots.c.environment == snapshot.environment,
        )
        if self._conn.execute(update(schema_snapshots).where(*where).values(**values)).rowcount:
            return
        inserted = self._insert_or_conflict(
            insert(schema_snapshots).values(
                database_name=snapshot.database, environment=snapshot.environment, **values
            )
        )
        if not inserted:  # another writer inserted it meanwhile: ours is newer
            self._conn.execute(update(schema_snapshots).where(*where).values(**values))

    def get_schema_snapshot(self, scope: Scope) -> SchemaSnapshot | None:
        return self._first(
            select(schema_snapshots).where(
                schema_snapshots.c.database_name == scope.database,
                schema_snapshots.c.environment == scope.environment,
            ),
            _snapshot,
        )

    # --- dry-run jobs -------------------------------------------------------------------

    def insert_dry_run_job(self, job: DryRunJobRecord) -> None:
        self._conn.execute(
            insert(dry_run_jobs).values(**_job_columns(job), request_id=job.request_id)
        )

    def get_dry_run_job(self, job_id: str) -> DryRunJobRecord | None:
        return self._first(select(dry_run_jobs).where(dry_run_jobs.c.id == job_id), _dry_run)

    def dry_run_jobs_for_request(self, request_id: str) -> list[DryRunJobRecord]:
        return self._all(
            select(dry_run_jobs)
            .where(dry_run_jobs.c.request_id == request_id)
            .order_by(dry_run_jobs.c.created_at, dry_run_jobs.c.id),
            _dry_run,
        )

    def pending_dry_run_jobs(self, scopes: Collection[Scope], limit: int) -> list[DryRunJobRecord]:
        if not scopes or limit <= 0:
            return []
        return self._all(
            select(dry_run_jobs)
            .where(
                dry_run_jobs.c.status == DryRunStatus.PENDING.value,
                _scope_filter(dry_run_jobs.c.database_name, dry_run_jobs.c.environment, scopes),
                # A finished request's job waits for the sweep to fail it; never offered.
                ~exists().where(
                    requests.c.id == dry_run_jobs.c.request_id,
                    requests.c.status.in_(_statuses(TERMINAL_STATUSES)),
                ),
            )
            .order_by(dry_run_jobs.c.created_at, dry_run_jobs.c.id)
            .limit(limit),
            _dry_run,
        )

    def claim_dry_run_job(
        self, job_id: str, agent_id: str, claim_token: str, now: datetime
    ) -> bool:
        result = self._conn.execute(
            update(dry_run_jobs)
            .where(
                dry_run_jobs.c.id == job_id,
                dry_run_jobs.c.status == DryRunStatus.PENDING.value,
            )
            .values(**_claim_columns(DryRunStatus.CLAIMED, agent_id, claim_token, now))
        )
        return result.rowcount == 1

    def finish_dry_run_job(
        self, job_id: str, agent_id: str, claim_token: str, outcome: DryRunOutcome
    ) -> bool:
        result = self._conn.execute(
            update(dry_run_jobs)
            .where(*_held_by(dry_run_jobs, job_id, agent_id, claim_token, DryRunStatus.CLAIMED))
            .values(**_outcome_columns(outcome))
        )
        return result.rowcount == 1

    def fail_orphaned_dry_runs(
        self, finished: Collection[RequestStatus], message: str, now: datetime
    ) -> int:
        finished_requests = select(requests.c.id).where(requests.c.status.in_(_statuses(finished)))
        result = self._conn.execute(
            update(dry_run_jobs)
            .where(
                dry_run_jobs.c.status == DryRunStatus.PENDING.value,
                dry_run_jobs.c.request_id.in_(finished_requests),
            )
            .values(
                status=DryRunStatus.FAILED.value,
                error_message=message,
                completed_at=format_timestamp(now),
            )
        )
        return result.rowcount

    def release_stale_dry_run_claims(self, claimed_before: datetime) -> int:
        result = self._conn.execute(
            update(dry_run_jobs)
            .where(
                dry_run_jobs.c.status == DryRunStatus.CLAIMED.value,
                dry_run_jobs.c.claimed_at < format_timestamp(claimed_before),
            )
            .values(
                status=DryRunStatus.PENDING.value,
                claimed_by=None,
                claimed_at=None,
                claim_token=None,
            )
        )
        return int(result.rowcount)

    # --- preflight jobs -----------------------------------------------------------------

    def insert_preflight_job(self, job: PreflightJobRecord) -> None:
        self._conn.execute(
            insert(preflight_jobs).values(
                **_job_columns(job),
                requester=job.requester,
                expires_at=format_timestamp(job.expires_at),
            )
        )

    def get_preflight_job(self, job_id: str) -> PreflightJobRecord | None:
        return self._first(select(preflight_jobs).where(preflight_jobs.c.id == job_id), _preflight)

    def _pending_preflight(self, scopes: Collection[Scope], now: datetime) -> ColumnElement[bool]:
        return and_(
            preflight_jobs.c.status == PreflightStatus.PENDING.value,
            preflight_jobs.c.expires_at > format_timestamp(now),
            _scope_filter(preflight_jobs.c.database_name, preflight_jobs.c.environment, scopes),
        )

    def has_pending_preflight(self, scopes: Collection[Scope], now: datetime) -> bool:
        if not scopes:
            return False
        return bool(self._conn.scalar(select(exists().where(self._pending_preflight(scopes, now)))))

    def claim_preflight_jobs(
        self,
        scopes: Collection[Scope],
        agent_id: str,
        claim_token: str,
        now: datetime,
        limit: int,
    ) -> list[PreflightJobRecord]:
        if not scopes or limit <= 0:
            return []
        candidates = [
            row[0]
            for row in self._conn.execute(
                select(preflight_jobs.c.id)
                .where(self._pending_preflight(scopes, now))
                .order_by(preflight_jobs.c.created_at, preflight_jobs.c.id)
                .limit(limit)
            )
        ]
        if not candidates:
            return []
        # Guarded by status: a job another agent claimed meanwhile stays theirs.
        self._conn.execute(
            update(preflight_jobs)
            .where(
                preflight_jobs.c.id.in_(candidates),
                preflight_jobs.c.status == PreflightStatus.PENDING.value,
            )
            .values(**_claim_columns(PreflightStatus.CLAIMED, agent_id, claim_token, now))
        )
        return self._all(
            select(preflight_jobs)
            .where(
                preflight_jobs.c.id.in_(candidates),
                preflight_jobs.c.claim_token == claim_token,
            )
            .order_by(preflight_jobs.c.created_at, preflight_jobs.c.id),
            _preflight,
        )

    def finish_preflight_job(
        self, job_id: str, agent_id: str, claim_token: str, outcome: PreflightOutcome
    ) -> bool:
        result = self._conn.execute(
            update(preflight_jobs)
            .where(
                *_held_by(preflight_jobs, job_id, agent_id, claim_token, PreflightStatus.CLAIMED),
                preflight_jobs.c.expires_at > format_timestamp(outcome.completed_at),
            )
            .values(**_outcome_columns(outcome))
        )
        return result.rowcount == 1

    def expire_preflight_jobs(self, now: datetime) -> int:
        result = self._conn.execute(
            update(preflight_jobs)
            .where(
                preflight_jobs.c.status.in_(
                    [PreflightStatus.PENDING.value, PreflightStatus.CLAIMED.value]
                ),
                preflight_jobs.c.expires_at <= format_timestamp(now),
            )
            .values(status=PreflightStatus.EXPIRED.value)
        )
        return int(result.rowcount)
