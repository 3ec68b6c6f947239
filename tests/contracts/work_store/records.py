"""Records for the work store contracts: valid defaults, each test names what it varies.

Times are whole offsets from `T0`, so every test can say which row is older.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from application.server.ports.work import WorkRepository
from application.server.ports.work.executions import ExecutionRecord, ExecutionStatus, ResultSummary
from application.server.ports.work.explain_jobs import DryRunJobRecord, PreflightJobRecord
from application.server.ports.work.requests import RequestRecord
from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PROD = Scope("orders", "prod")
STAGING = Scope("orders", "staging")
BILLING = Scope("billing", "prod")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add_request(
    work: WorkRepository,
    request_id: str,
    *,
    scope: Scope = PROD,
    status: RequestStatus = RequestStatus.PENDING,
    created: float = 0,
    updated: float | None = None,
    **fields: Any,
) -> RequestRecord:
    """Insert a request (and its database row, which requests refer to)."""
    record = RequestRecord(
        id=request_id,
        requester=fields.pop("requester", "alice"),
        operation=fields.pop("operation", Operation.EXECUTE_SELECT),
        database=scope.database,
        environment=scope.environment,
        detail=fields.pop("detail", "SELECT 1"),
        status=status,
        created_at=at(created),
        updated_at=at(created if updated is None else updated),
        **fields,
    )
    work.ensure_database(scope, T0)
    work.insert_request(record)
    return record


def an_execution(
    execution_id: str,
    request_id: str,
    *,
    status: ExecutionStatus = ExecutionStatus.CLAIMED,
    created: float = 0,
    lease_expires: float = 60,
    **fields: Any,
) -> ExecutionRecord:
    return ExecutionRecord(
        id=execution_id,
        request_id=request_id,
        agent_id=fields.pop("agent_id", "agent-1"),
        status=status,
        token=fields.pop("token", f"token-{execution_id}"),
        lease_secs=fields.pop("lease_secs", 60),
        lease_expires_at=at(lease_expires),
        started_at=at(created),
        created_at=at(created),
        **fields,
    )


def a_result(
    execution: ExecutionRecord, *, stored: float = 0, storage_key: str = "", **fields: Any
) -> ResultSummary:
    return ResultSummary(
        id=f"res-{execution.id}",
        request_id=execution.request_id,
        execution_id=execution.id,
        success=fields.pop("success", True),
        stored_at=at(stored),
        storage_key=storage_key,
        **fields,
    )


def a_dry_run(
    job_id: str, request_id: str, *, scope: Scope = PROD, created: float = 0, **fields: Any
) -> DryRunJobRecord:
    return DryRunJobRecord(
        id=job_id,
        request_id=request_id,
        database=scope.database,
        environment=scope.environment,
        sql=fields.pop("sql", "SELECT 1"),
        created_at=at(created),
        **fields,
    )


def a_preflight(
    job_id: str,
    *,
    scope: Scope = PROD,
    created: float = 0,
    expires: float = 300,
    **fields: Any,
) -> PreflightJobRecord:
    return PreflightJobRecord(
        id=job_id,
        requester=fields.pop("requester", "alice"),
        database=scope.database,
        environment=scope.environment,
        sql=fields.pop("sql", "SELECT 1"),
        expires_at=at(expires),
        created_at=at(created),
        **fields,
    )
