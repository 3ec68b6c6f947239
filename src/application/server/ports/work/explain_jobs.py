"""The EXPLAIN jobs port: dry-run jobs (one per statement of a new request) and preflight
jobs (`POST /api/preflight`, short-lived).

Both are queued here and claimed by agents: a claim and a finish are conditional updates
guarded by status, agent and claim token, so a job is never claimed or finished twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from domain.server.request_lifecycle import RequestStatus
from domain.shared.scopes import Scope

__all__ = [
    "DryRunJobRecord",
    "DryRunOutcome",
    "DryRunStatus",
    "ExplainJobRepository",
    "JobOutcome",
    "PreflightJobRecord",
    "PreflightOutcome",
    "PreflightStatus",
]


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


class ExplainJobRepository(Protocol):
    # dry-run jobs --------------------------------------------------------------------------
    def insert_dry_run_job(self, job: DryRunJobRecord) -> None: ...

    def get_dry_run_job(self, job_id: str) -> DryRunJobRecord | None: ...

    def dry_run_jobs_for_request(self, request_id: str) -> list[DryRunJobRecord]: ...

    def pending_dry_run_jobs(self, scopes: Collection[Scope], limit: int) -> list[DryRunJobRecord]:
        """Oldest first; never a job of a request that is already finished."""
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

    def outstanding_preflight_jobs(self, requester: str, now: datetime) -> int:
        """The requester's unexpired preflight jobs still pending or claimed (the limit of
        `[preflight].max_concurrent_per_user`)."""
        ...

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
