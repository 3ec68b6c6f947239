"""`ExplainJobRepository` over SQLAlchemy Core: `dry_run_jobs` and `preflight_jobs`.

The two tables share their columns but for who asked (request_id / requester) and how
long a preflight job lives (expires_at), so one set of mappers serves both.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Exists,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)

from adapters.store.prepared import prepared
from adapters.store.schema import dry_run_jobs, preflight_jobs, requests
from adapters.store.work.base import (
    SqlRepository,
    bound_scope_filter,
    optional_timestamp,
    parse_optional_timestamp,
    scope_filter,
    scope_params,
    status_values,
)
from application.server.ports.work.explain_jobs import (
    DryRunJobRecord,
    DryRunOutcome,
    DryRunStatus,
    PreflightJobRecord,
    PreflightOutcome,
    PreflightStatus,
)
from domain.server.request_lifecycle import TERMINAL_STATUSES, RequestStatus
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp, parse_timestamp


def _job_fields(row: Row[Any]) -> dict[str, Any]:
    """The record fields both EXPLAIN job tables hold, by the record's names."""
    m = row._mapping
    return {
        "id": m["id"],
        "database": m["database_name"],
        "environment": m["environment"],
        "sql": m["sql"],
        "claimed_by": m["claimed_by"],
        "claimed_at": parse_optional_timestamp(m["claimed_at"]),
        "claim_token": m["claim_token"],
        "result_json": m["result_json"],
        "error_message": m["error_message"],
        "created_at": parse_timestamp(m["created_at"]),
        "completed_at": parse_optional_timestamp(m["completed_at"]),
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
        "claimed_at": optional_timestamp(job.claimed_at),
        "claim_token": job.claim_token,
        "result_json": job.result_json,
        "error_message": job.error_message,
        "created_at": format_timestamp(job.created_at),
        "completed_at": optional_timestamp(job.completed_at),
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


#: Statements of the poll's looks, built once per number of scopes (docs/protocol.md
#: §3.2 steps 6 and 7): a poll names the same scopes every time.
_SCOPE_COUNTS_KEPT = 64


@lru_cache(maxsize=_SCOPE_COUNTS_KEPT)
def _pending_dry_runs(scope_count: int) -> Select[Any]:
    return prepared(
        select(dry_run_jobs)
        .where(
            dry_run_jobs.c.status == DryRunStatus.PENDING.value,
            bound_scope_filter(
                dry_run_jobs.c.database_name, dry_run_jobs.c.environment, scope_count
            ),
            # A finished request's job waits for the sweep to fail it; never offered.
            ~exists().where(
                requests.c.id == dry_run_jobs.c.request_id,
                requests.c.status.in_(status_values(TERMINAL_STATUSES)),
            ),
        )
        .order_by(dry_run_jobs.c.created_at, dry_run_jobs.c.id)
        .limit(bindparam("_limit"))
    )


@lru_cache(maxsize=_SCOPE_COUNTS_KEPT)
def _any_pending_preflight(scope_count: int) -> Select[Any]:
    pending: Exists = exists().where(
        preflight_jobs.c.status == PreflightStatus.PENDING.value,
        preflight_jobs.c.expires_at > bindparam("_now"),
        bound_scope_filter(
            preflight_jobs.c.database_name, preflight_jobs.c.environment, scope_count
        ),
    )
    return prepared(select(pending))


class SqlExplainJobRepository(SqlRepository):
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
            _pending_dry_runs(len(scopes)),
            _dry_run,
            {**scope_params(scopes), "_limit": limit},
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
        finished_requests = select(requests.c.id).where(
            requests.c.status.in_(status_values(finished))
        )
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
            scope_filter(preflight_jobs.c.database_name, preflight_jobs.c.environment, scopes),
        )

    def has_pending_preflight(self, scopes: Collection[Scope], now: datetime) -> bool:
        if not scopes:
            return False
        params = {**scope_params(scopes), "_now": format_timestamp(now)}
        return bool(self._conn.scalar(_any_pending_preflight(len(scopes)), params))

    def outstanding_preflight_jobs(self, requester: str, now: datetime) -> int:
        return int(
            self._conn.scalar(
                select(func.count())
                .select_from(preflight_jobs)
                .where(
                    preflight_jobs.c.requester == requester,
                    preflight_jobs.c.status.in_(
                        [PreflightStatus.PENDING.value, PreflightStatus.CLAIMED.value]
                    ),
                    preflight_jobs.c.expires_at > format_timestamp(now),
                )
            )
            or 0
        )

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
