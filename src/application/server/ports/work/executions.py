"""The executions port: an agent's claim of a request, its lease, and the result it left.

An execution is claimed, kept alive by heartbeats (`extend_lease`), and finished by a
result (`complete_execution`) or by the lease sweep (`fail_expired_lease`); each of those
is a conditional update that returns whether it won, so a result racing the sweep is
decided by the store. The result summary of a finished execution is kept here too: it is
the execution's outcome, one row per execution.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from application.server.ports.work.requests import RequestRecord
from domain.shared.scopes import Scope

__all__ = [
    "LEASE_EXPIRED_MESSAGE",
    "LIVE_EXECUTION_STATUSES",
    "RESULT_PURGED",
    "RESULT_STORED",
    "ExecutionAlreadyClaimed",
    "ExecutionCompletion",
    "ExecutionRecord",
    "ExecutionRepository",
    "ExecutionStatus",
    "ListedResult",
    "ResultQuery",
    "ResultSummary",
]

#: `executions.error_message` of an execution the lease sweep declared lost: the marker
#: that lets exactly that execution still deliver a late result.
LEASE_EXPIRED_MESSAGE = "lease expired"

#: `results.status` of a summary whose content (if any) is still kept.
RESULT_STORED = "stored"
#: `results.status` once the retention purge deleted the content: the summary stays.
RESULT_PURGED = "expired"


class ExecutionAlreadyClaimed(Exception):
    """`insert_execution` hit the one-claimed-execution-per-request index."""


class ExecutionStatus(StrEnum):
    CLAIMED = "claimed"
    RUNNING = "running"  # in dbward 0.2's guards; nothing sets it
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
class ExecutionCompletion:
    """How `complete_execution` finishes an execution."""

    status: ExecutionStatus
    finished_at: datetime
    error_message: str | None = None
    #: Accept the execution only if the lease sweep failed it (a late result) and no newer
    #: execution of its request exists; otherwise only a live (claimed) one.
    late: bool = False


@dataclass(frozen=True)
class ResultSummary:
    """One row of `results`: a finished execution's outcome, persisted (§11.14).

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
    status: str = RESULT_STORED
    expires_at: datetime | None = None

    @property
    def purged(self) -> bool:
        """The retention purge deleted the content (docs/server.md §3.2)."""
        return self.status == RESULT_PURGED

    @property
    def has_stored_content(self) -> bool:
        return bool(self.storage_key) and not self.purged


@dataclass(frozen=True)
class ResultQuery:
    """`GET /api/results`: the results one caller may read, as the store can select them.

    The use case turns the result-access rule (docs/server.md §1.8) into sets the store
    can match: a result is listed when its request is in `scopes` and either its scope is
    in `every_result_in` (`result.view:any`, a result policy's `access`), or `subject` is
    its requester or approved it, or its `share_with` names one of `share_selectors`.
    """

    subject: str
    scopes: frozenset[Scope]
    every_result_in: frozenset[Scope] = frozenset()
    share_selectors: tuple[str, ...] = ()
    database: str | None = None
    environment: str | None = None


@dataclass(frozen=True)
class ListedResult:
    """A result summary with the request it belongs to."""

    summary: ResultSummary
    request: RequestRecord


class ExecutionRepository(Protocol):
    # executions ------------------------------------------------------------------------
    def insert_execution(self, record: ExecutionRecord) -> None:
        """Raises `ExecutionAlreadyClaimed` if the request has a claimed execution."""
        ...

    def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    def list_executions(self, request_id: str, limit: int) -> list[ExecutionRecord]:
        """Newest first."""
        ...

    def count_executions(self, request_id: str) -> int:
        """Every execution the request ever had, live, finished or lost: what
        `max_executions` bounds (docs/server.md §1.4)."""
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

    def results_of_request(self, request_id: str) -> list[ResultSummary]:
        """Every result summary of the request, oldest first."""
        ...

    def list_results(self, query: ResultQuery, *, limit: int, offset: int) -> list[ListedResult]:
        """Newest first (`stored_at`, then id)."""
        ...

    def expired_results(self, now: datetime, limit: int) -> list[ResultSummary]:
        """Results still holding stored content whose `expires_at` is before `now`, oldest
        expiry first."""
        ...

    def mark_result_purged(self, result_id: str) -> bool:
        """`stored` → `expired` (the content is gone, the summary stays). True if it won."""
        ...
