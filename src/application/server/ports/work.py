"""The work repository port: requests, executions, results, agents, snapshots, EXPLAIN jobs.

Part of a `StoreSession` (`application.server.ports.store`): every method runs inside the
session's transaction, so a state change and the audit event the use case appends in the
same session commit together. Every status change is a conditional update
(`UPDATE … WHERE id = ? AND status IN (…)`) that returns whether it won: two replicas, two
agents or a sweep racing a result never both succeed, and nobody has to read first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from domain.server.agent_registry import AgentRecord
from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

__all__ = [
    "LEASE_EXPIRED_MESSAGE",
    "LIVE_EXECUTION_STATUSES",
    "NO_CHANGES",
    "AgentRow",
    "AgentUpsert",
    "DryRunJobRecord",
    "DryRunOutcome",
    "DryRunStatus",
    "DuplicateIdempotencyKey",
    "ExecutionAlreadyClaimed",
    "ExecutionCompletion",
    "ExecutionRecord",
    "ExecutionStatus",
    "JobOutcome",
    "PreflightJobRecord",
    "PreflightOutcome",
    "PreflightStatus",
    "RequestFilters",
    "RequestRecord",
    "RequestUpdate",
    "ResultSummary",
    "SchemaSnapshot",
    "WorkRepository",
    "scopes_key",
]

#: `executions.error_message` of an execution the lease sweep declared lost: the marker
#: that lets exactly that execution still deliver a late result.
LEASE_EXPIRED_MESSAGE = "lease expired"


class DuplicateIdempotencyKey(Exception):
    """`insert_request` lost a race on UNIQUE(requester, idempotency_key)."""


class ExecutionAlreadyClaimed(Exception):
    """`insert_execution` hit the one-claimed-execution-per-request index."""


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One row of `requests`. JSON columns stay raw strings: they are signed or frozen."""

    id: str
    requester: str
    operation: Operation
    database: str
    environment: str
    detail: str
    status: RequestStatus
    created_at: datetime
    updated_at: datetime
    #: The status a dispatch came from, so an unclaimed dispatch can go back to it.
    pre_dispatch_status: RequestStatus | None = None
    emergency: bool = False
    reason: str | None = None
    idempotency_key: str | None = None
    #: sha256 hex of `detail`: a replay with another detail is a 409.
    idempotency_fingerprint: str | None = None
    metadata_json: str = "{}"
    share_with: tuple[str, ...] = ()
    no_store: bool = False
    workflow_snapshot_json: str | None = None
    decision_trace_json: str | None = None
    #: The exact statement texts, a compact JSON array: hashed byte for byte into the
    #: execution token. None for migrations.
    execution_plan_json: str | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    audit_incomplete: bool = False
    resolved_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)

    @property
    def database_id(self) -> str:
        return f"{self.database}:{self.environment}"


@dataclass(frozen=True)
class RequestUpdate:
    """Columns a status change may also set; None leaves a column as it is.

    `clear_pre_dispatch_status` sets that column to NULL (a dispatch timeout returns).
    """

    pre_dispatch_status: RequestStatus | None = None
    clear_pre_dispatch_status: bool = False
    resolved_at: datetime | None = None
    expires_at: datetime | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None


#: `update_request_status` with nothing but the status (and `updated_at`).
NO_CHANGES = RequestUpdate()


@dataclass(frozen=True)
class RequestFilters:
    """`GET /api/requests`: every given field must match."""

    requester: str | None = None
    status: RequestStatus | None = None


# --- executions and results ------------------------------------------------------------------


class ExecutionStatus(StrEnum):
    CLAIMED = "claimed"
    RUNNING = "running"  # in the reference's guards; nothing sets it
    COMPLETED = "completed"
    FAILED = "failed"


#: Executions that still hold a lease.
LIVE_EXECUTION_STATUSES = frozenset({ExecutionStatus.CLAIMED, ExecutionStatus.RUNNING})


@dataclass(frozen=True)
class ExecutionRecord:
    id: str
    request_id: str
    agent_id: str
    status: ExecutionStatus
    #: The signed execution token, as sent to the agent.
    token: str
    #: What each heartbeat extends the lease by.
    lease_secs: int
    lease_expires_at: datetime
    started_at: datetime
    created_at: datetime
    finished_at: datetime | None = None
    error_message: str | None = None

    @property
    def lost_by_lease(self) -> bool:
        """Failed by the lease sweep, not by a result: only such an execution may be late."""
        return self.status is ExecutionStatus.FAILED and self.error_message == LEASE_EXPIRED_MESSAGE


@dataclass(frozen=True)
class ResultSummary:
    """One row of `results`: a finished execution's outcome, persisted (§11(c)14).

    The summary outlives the in-memory relay, so a client that reconnects (or asks another
    replica) still learns how its request ended. `storage_key` is "" when the content was
    not persisted (stream-only delivery, or a request with `no_store`).
    """

    id: str
    request_id: str
    execution_id: str
    success: bool
    stored_at: datetime
    rows_affected: int | None = None
    duration_ms: int | None = None
    truncated: bool = False
    truncation_reason: str | None = None
    error_message: str | None = None
    storage_backend: str | None = None
    storage_key: str = ""
    content_length: int = 0
    checksum_sha256: str | None = None
    retention_days: int | None = None
    status: str = "stored"
    expires_at: datetime | None = None

    @property
    def has_stored_content(self) -> bool:
        return bool(self.storage_key)


# --- agents -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentRow:
    """An agent registry row: the domain record plus what only the store keeps."""

    record: AgentRecord
    operations: tuple[Operation, ...] = ()
    token_id: str | None = None
    #: Every configured `agent_id` seen behind this token (our agents may send one).
    agent_ids: tuple[str, ...] = ()
    created_at: datetime | None = None


# --- schema snapshots and EXPLAIN jobs -----------------------------------------------------


@dataclass(frozen=True)
class SchemaSnapshot:
    database: str
    environment: str
    status: str  # ready | failed | partial
    dialect: str  # postgresql | mysql
    collected_at: datetime
    agent_id: str
    snapshot_json: str | None = None
    error_message: str | None = None


class DryRunStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class DryRunJobRecord:
    id: str
    request_id: str
    database: str
    environment: str
    sql: str
    created_at: datetime
    status: DryRunStatus = DryRunStatus.PENDING
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    claim_token: str | None = None
    result_json: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


class PreflightStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    ERROR = "error"
    EXPIRED = "expired"


@dataclass(frozen=True)
class PreflightJobRecord:
    id: str
    requester: str
    database: str
    environment: str
    sql: str
    expires_at: datetime
    created_at: datetime
    status: PreflightStatus = PreflightStatus.PENDING
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    claim_token: str | None = None
    result_json: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


@dataclass(frozen=True)
class ExecutionCompletion:
    """How `complete_execution` finishes an execution."""

    status: ExecutionStatus
    finished_at: datetime
    error_message: str | None = None
    #: Accept the execution only if the lease sweep failed it (a late result) and no newer
    #: execution of its request exists; otherwise only a live (claimed) one.
    late: bool = False


_JobStatus = TypeVar("_JobStatus", DryRunStatus, PreflightStatus)


@dataclass(frozen=True)
class JobOutcome(Generic[_JobStatus]):
    """How an agent finished a claimed EXPLAIN job (dry-run or preflight)."""

    status: _JobStatus
    completed_at: datetime
    result_json: str | None = None
    error_message: str | None = None


DryRunOutcome = JobOutcome[DryRunStatus]
PreflightOutcome = JobOutcome[PreflightStatus]


@dataclass(frozen=True)
class AgentUpsert:
    """What one poll writes into the registry."""

    record: AgentRecord
    operations: tuple[Operation, ...] = ()
    token_id: str | None = None


# --- the port -------------------------------------------------------------------------------


class WorkRepository(Protocol):
    # databases -------------------------------------------------------------------------
    def ensure_database(self, scope: Scope, now: datetime) -> None:
        """Make sure the `databases` row for a registered scope exists (idempotent)."""
        ...

    # requests --------------------------------------------------------------------------
    def insert_request(self, record: RequestRecord) -> None:
        """Raises `DuplicateIdempotencyKey` when (requester, key) is taken already."""
        ...

    def get_request(self, request_id: str) -> RequestRecord | None: ...

    def find_idempotent(self, requester: str, idempotency_key: str) -> RequestRecord | None: ...

    def list_requests(
        self, filters: RequestFilters, *, limit: int, offset: int
    ) -> tuple[list[RequestRecord], int]:
        """Newest first, and the total count of matching rows."""
        ...

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
        """`UPDATE requests SET status = to … WHERE id = ? AND status IN allowed_from`.

        `updated_before` adds `AND updated_at < ?` (a sweep's guard). True if it won.
        """
        ...

    def replace_pending_approvers(
        self, request_id: str, step_index: int, selectors: Sequence[str]
    ) -> None:
        """`request_pending_approvers`: the selectors that may approve the current step."""
        ...

    def pending_approvers(self, request_id: str) -> list[tuple[int, str]]:
        """(step_index, selector) rows of a request."""
        ...

    def dispatched_requests(
        self, scopes: Collection[Scope], operations: Collection[Operation], limit: int
    ) -> list[RequestRecord]:
        """`dispatched` requests in `scopes` (and `operations`, when given), oldest first."""
        ...

    def lock_migrations(self, scope: Scope) -> None:
        """Serialise migration claims of `scope` until the transaction ends.

        Call before `migration_active`: without it two replicas on PostgreSQL (READ
        COMMITTED) could each see no running migration and both claim one.
        """
        ...

    def migration_active(self, scope: Scope, exclude_request_id: str) -> bool:
        """Another migrate_up/down/repair of `scope` is running.

        The reference also counts *dispatched* ones, so two dispatched migrations refuse
        each other until a dispatch timeout; only a running one excludes here.
        """
        ...

    def stale_dispatched(self, updated_before: datetime, limit: int) -> list[RequestRecord]: ...

    def expirable_requests(
        self, statuses: Collection[RequestStatus], now: datetime, limit: int
    ) -> list[RequestRecord]:
        """Requests in `statuses` whose `expires_at` is before `now`."""
        ...

    # executions ------------------------------------------------------------------------
    def insert_execution(self, record: ExecutionRecord) -> None:
        """Raises `ExecutionAlreadyClaimed` if the request has a claimed execution."""
        ...

    def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    def list_executions(self, request_id: str, limit: int) -> list[ExecutionRecord]:
        """Newest first."""
        ...

    def newer_execution_exists(self, execution: ExecutionRecord) -> bool: ...

    def extend_lease(self, execution_id: str, lease_expires_at: datetime) -> bool:
        """Only a claimed execution's lease moves."""
        ...

    def complete_execution(self, execution_id: str, completion: ExecutionCompletion) -> bool: ...

    def expired_leases(self, now: datetime, limit: int) -> list[ExecutionRecord]: ...

    def fail_expired_lease(self, execution_id: str, now: datetime) -> bool:
        """Claimed/running and still past its lease → failed with `LEASE_EXPIRED_MESSAGE`."""
        ...

    # results ---------------------------------------------------------------------------
    def insert_result(self, summary: ResultSummary) -> None: ...

    def latest_result(self, request_id: str) -> ResultSummary | None: ...

    def result_for_execution(self, execution_id: str) -> ResultSummary | None: ...

    def executions_with_results(self, execution_ids: Collection[str]) -> set[str]:
        """Those of `execution_ids` that have stored content."""
        ...

    # agents ----------------------------------------------------------------------------
    def get_agent(self, agent_id: str) -> AgentRow | None: ...

    def upsert_agent(self, upsert: AgentUpsert, now: datetime) -> bool:
        """Write the poll's view of the agent; True when the row is new (first poll)."""
        ...

    def list_agents(self) -> list[AgentRow]: ...

    # schema snapshots --------------------------------------------------------------------
    def upsert_schema_snapshot(self, snapshot: SchemaSnapshot) -> None: ...

    def get_schema_snapshot(self, scope: Scope) -> SchemaSnapshot | None: ...

    # dry-run jobs --------------------------------------------------------------------------
    def insert_dry_run_job(self, job: DryRunJobRecord) -> None: ...

    def get_dry_run_job(self, job_id: str) -> DryRunJobRecord | None: ...

    def dry_run_jobs_for_request(self, request_id: str) -> list[DryRunJobRecord]: ...

    def pending_dry_run_jobs(self, scopes: Collection[Scope], limit: int) -> list[DryRunJobRecord]:
        """Oldest first."""
        ...

    def claim_dry_run_job(
        self, job_id: str, agent_id: str, claim_token: str, now: datetime
    ) -> bool: ...

    def finish_dry_run_job(
        self, job_id: str, agent_id: str, claim_token: str, outcome: DryRunOutcome
    ) -> bool: ...

    def release_stale_dry_run_claims(self, claimed_before: datetime) -> int: ...

    def fail_orphaned_dry_runs(
        self, finished: Collection[RequestStatus], message: str, now: datetime
    ) -> int:
        """Pending dry-run jobs whose request is in one of `finished` → `failed`."""
        ...

    # preflight jobs ----------------------------------------------------------------------
    def insert_preflight_job(self, job: PreflightJobRecord) -> None: ...

    def get_preflight_job(self, job_id: str) -> PreflightJobRecord | None: ...

    def has_pending_preflight(self, scopes: Collection[Scope], now: datetime) -> bool: ...

    def claim_preflight_jobs(
        self,
        scopes: Collection[Scope],
        agent_id: str,
        claim_token: str,
        now: datetime,
        limit: int,
    ) -> list[PreflightJobRecord]:
        """Claim up to `limit` pending, unexpired jobs in `scopes` under one claim token."""
        ...

    def finish_preflight_job(
        self, job_id: str, agent_id: str, claim_token: str, outcome: PreflightOutcome
    ) -> bool: ...

    def expire_preflight_jobs(self, now: datetime) -> int: ...


def scopes_key(scopes: Sequence[Scope]) -> tuple[str, ...]:
    """`database_id` values (`db:env`) of `scopes`, as the requests table stores them."""
    return tuple(f"{scope.database}:{scope.environment}" for scope in scopes)
