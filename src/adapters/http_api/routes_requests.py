"""The request API (docs/server.md §8.2): create, read, list, cancel, resume, results,
executions.

Long-polls (`GET /api/requests/{id}?wait=`, `…/result/stream`) are `async` and wait on the
notifier without holding a thread; the other routes are plain functions FastAPI runs in
its thread pool. A result stream that times out answers 204 with no body at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from adapters.http_api.auth import current_principal
from adapters.http_api.input_checks import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_OFFSET,
    refuse_lone_surrogates,
)
from adapters.http_api.routing import api_router
from application.server.ports.store import StoreCalls
from application.server.ports.work.explain_jobs import DryRunJobRecord, DryRunStatus
from application.server.ports.work.requests import RequestRecord
from application.server.requests.cancel import CancelRequest
from application.server.requests.common import ServerDraining
from application.server.requests.create import CreateRequest, CreateRequestInput
from application.server.requests.decision_trace import judged_context
from application.server.requests.queries import (
    MAX_WAIT_SECS,
    AwaitingApproval,
    ExecutionHistoryEntry,
    GetRequest,
    ListExecutions,
    ListRequests,
    RequestDetails,
)
from application.server.requests.results import GetResultContent, ResultEnvelope, WaitForResult
from application.server.requests.resume import ResumeRequest
from application.server.store_calls import IN_THREADS
from domain.server.approvals import Approval, ApprovalProgress
from domain.server.rbac import Principal
from domain.shared.timestamps import format_timestamp

__all__ = ["RequestUseCases", "build_request_router"]

_EXPLAIN_PERMISSION_HINT = "Grant EXPLAIN privilege to agent DB user"


class _CreateBody(BaseModel):
    """dbward 0.2's `CreateRequestBody`; unknown keys are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    database: str
    environment: str
    detail: str
    operation: str = ""
    reason: str | None = None
    idempotency_key: Annotated[str | None, Field(max_length=MAX_IDEMPOTENCY_KEY_CHARS)] = None
    metadata: Any = None
    emergency: bool = False
    allow_ddl: bool = False
    no_store: bool = False
    # The spec's name for `no_store`; either one sets it.
    no_result_store: bool = False
    share_with: list[str] = []

    check_text = field_validator("*")(refuse_lone_surrogates)


class _ResumeBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    reason: str | None = None

    check_text = field_validator("*")(refuse_lone_surrogates)


class _CancelBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    reason: str | None = None

    check_text = field_validator("*")(refuse_lone_surrogates)


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(
        content=orjson.dumps(content), status_code=status_code, media_type="application/json"
    )


def _draining() -> JSONResponse:
    return JSONResponse(status_code=503, content={"error": "server_shutting_down"})


def _summary(record: RequestRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "requester": record.requester,
        "created_by": record.requester,
        "database": record.database,
        "environment": record.environment,
        "operation": record.operation.value,
        "detail": record.detail,
        "status": record.status.value,
        "reason": record.reason,
        "emergency": record.emergency,
        "created_at": _ts(record.created_at),
        "updated_at": _ts(record.updated_at),
        "resolved_at": _ts(record.resolved_at),
        "expires_at": _ts(record.expires_at),
    }


def _list_entry(record: RequestRecord, awaiting: AwaitingApproval | None) -> dict[str, Any]:
    body = _summary(record)
    if awaiting is not None:
        body["current_step"] = awaiting.current_step
        body["total_steps"] = awaiting.total_steps
        body["next_approvers"] = list(awaiting.next_approvers)
    return body


def _approval(approval: Approval) -> dict[str, Any]:
    return {
        "user": approval.actor_id,
        "action": approval.action.value,
        "selector": approval.matched_selector,
        "comment": approval.comment,
        "at": _ts(approval.created_at),
    }


def _approval_progress(progress: ApprovalProgress | None) -> dict[str, Any] | None:
    """`approval_progress` (docs/server.md §2.4): steps are 0-based like `current_step`."""
    if progress is None:
        return None
    return {
        "current_step": progress.current_step,
        "total_steps": progress.total_steps,
        "awaiting": list(progress.awaiting),
        "steps": [
            {
                "index": step.index,
                "mode": step.mode.value,
                "satisfied": step.satisfied,
                "approvers_required": [
                    {"selector": a.selector, "min": a.min, "current": a.current}
                    for a in step.approvers_required
                ],
                "approvals": [_approval(a) for a in step.approvals],
            }
            for step in progress.steps
        ],
    }


def _explain_entry(job: DryRunJobRecord) -> dict[str, Any]:
    if job.status is DryRunStatus.COMPLETED:
        return {"sql": job.sql, "plan": json.loads(job.result_json or "null")}
    if job.status is DryRunStatus.FAILED:
        error = job.error_message or ""
        hint = (
            _EXPLAIN_PERMISSION_HINT
            if "permission denied" in error or "Access denied" in error
            else None
        )
        return {"sql": job.sql, "error": error, "hint": hint}
    return {"sql": job.sql, "status": job.status.value}


def _context(details: RequestDetails) -> dict[str, Any]:
    jobs = details.dry_runs
    if not jobs:
        status = "ready"
    elif any(job.status in (DryRunStatus.PENDING, DryRunStatus.CLAIMED) for job in jobs):
        status = "collecting"
    elif all(job.status is DryRunStatus.COMPLETED for job in jobs):
        status = "ready"
    else:
        status = "partial"
    return {
        "status": status,
        "explain_enabled": details.explain_enabled,
        **judged_context(details.record),
        "explain": [_explain_entry(job) for job in jobs],
    }


def _details(details: RequestDetails) -> dict[str, Any]:
    record = details.record
    body = _summary(record)
    body.update(
        {
            "queue_hint": None if details.queue_hint is None else details.queue_hint.value,
            "share_with": list(record.share_with),
            "no_result_store": record.no_store,
            "pre_dispatch_status": None
            if record.pre_dispatch_status is None
            else record.pre_dispatch_status.value,
            "cancelled_by": record.cancelled_by,
            "cancel_reason": record.cancel_reason,
            "approvers": list(details.approvers),
            "approval_progress": _approval_progress(details.approval_progress),
            "context": _context(details),
            "decision_trace": None
            if record.decision_trace_json is None
            else json.loads(record.decision_trace_json),
            "metadata": json.loads(record.metadata_json or "{}"),
        }
    )
    return body


def _is_json(raw: str) -> bool:
    """Valid JSON (no NaN/Infinity), big integers included (orjson refuses those)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        return True

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        json.loads(raw, parse_constant=refuse)
    except ValueError:
        return False
    return True


#: A result this small is checked and spliced on the event loop: tens of microseconds,
#: less than the hand-off to a worker thread that a large one gets.
_INLINE_ENVELOPE_CHARS = 16 * 1024


def _envelope(envelope: ResultEnvelope) -> Response:
    """The result envelope. The agent's JSON is spliced in as sent, never re-serialised:
    a 10 MB result is not parsed into objects and back, and no number changes on the way."""
    head = orjson.dumps(
        {
            "_dbward_result": True,
            "execution_id": envelope.execution_id,
            "success": envelope.success,
            "rows_affected": envelope.rows_affected,
            "truncated": envelope.truncated,
            "error_message": envelope.error_message,
        }
    )
    raw = envelope.result_data_raw
    if raw is None:
        data = b"null"
    elif _is_json(raw):
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = orjson.dumps(raw)  # not JSON: a string
    content = head[:-1] + b',"result_data":' + data + b"}"
    return Response(content=content, media_type="application/json")


def _execution(entry: ExecutionHistoryEntry) -> dict[str, Any]:
    execution = entry.execution
    return {
        "id": execution.id,
        "status": execution.status.value,
        "agent_id": execution.agent_id,
        "created_at": _ts(execution.created_at),
        "started_at": _ts(execution.started_at),
        "finished_at": _ts(execution.finished_at),
        "lease_expires_at": _ts(execution.lease_expires_at),
        "error_message": execution.error_message,
        "has_stored_result": entry.has_stored_result,
    }


@dataclass(frozen=True)
class RequestUseCases:
    """The use cases behind the request routes, one for each thing a route does."""

    create_request: CreateRequest
    get_request: GetRequest
    list_requests: ListRequests
    cancel_request: CancelRequest
    wait_for_result: WaitForResult
    get_result_content: GetResultContent
    list_executions: ListExecutions
    resume_request: ResumeRequest


def build_request_router(use_cases: RequestUseCases, calls: StoreCalls = IN_THREADS) -> APIRouter:
    """The request routes; creating a request and waiting for its result are store work
    through `calls` (short for a statement of a few lines), the others run on FastAPI's
    thread pool."""
    router = api_router()

    @router.post("/api/requests")
    async def create(
        body: _CreateBody,
        request: Request,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Response:
        create_request = use_cases.create_request
        created_input = CreateRequestInput(
            database=body.database,
            environment=body.environment,
            detail=body.detail,
            operation=body.operation,
            reason=body.reason,
            idempotency_key=body.idempotency_key,
            metadata=body.metadata,
            emergency=body.emergency,
            allow_ddl=body.allow_ddl,
            no_store=body.no_store or body.no_result_store,
            share_with=tuple(body.share_with),
            client_ip=request.client.host if request.client else None,
        )
        run = calls.long if create_request.is_long_work(created_input) else calls.short
        try:
            created = await run(create_request.create, principal, created_input)
        except ServerDraining:
            return _draining()
        return _json(
            {
                "id": created.id,
                "status": created.status.value,
                "operation": created.operation.value,
                "approvers": list(created.approvers),
                "idempotent": created.idempotent,
                "expires_at": _ts(created.expires_at),
            },
            status_code=created.http_status,
        )

    @router.get("/api/requests")
    def list_requests(
        principal: Annotated[Principal, Depends(current_principal)],
        limit: Annotated[int, Query(ge=1)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        status: str | None = None,
        user: str | None = None,
        pending_for_me: bool = False,
    ) -> Response:
        listing = use_cases.list_requests.list(
            principal,
            limit=limit,
            offset=offset,
            status=status,
            user=user,
            pending_for_me=pending_for_me,
        )
        return _json(
            {
                "requests": [
                    _list_entry(record, listing.awaiting.get(record.id))
                    for record in listing.requests
                ],
                "total": listing.total,
                "limit": listing.limit,
                "offset": listing.offset,
            }
        )

    @router.get("/api/requests/{request_id}")
    async def get_request(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        wait: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        details = await use_cases.get_request.get_waiting(
            principal, request_id, min(wait, MAX_WAIT_SECS)
        )
        return _json(_details(details))

    @router.post("/api/requests/{request_id}/cancel")
    def cancel(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        body: _CancelBody | None = None,
    ) -> Response:
        request_id, status = use_cases.cancel_request.cancel(
            principal, request_id, None if body is None else body.reason
        )
        return _json({"id": request_id, "status": status.value})

    @router.get("/api/requests/{request_id}/result/stream")
    async def result_stream(
        request_id: str, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Response:
        envelope = await use_cases.wait_for_result.wait(principal, request_id)
        if envelope is None:
            return Response(status_code=204)
        raw = envelope.result_data_raw
        if raw is None or len(raw) <= _INLINE_ENVELOPE_CHARS:
            return _envelope(envelope)
        return await run_in_threadpool(_envelope, envelope)

    @router.get("/api/requests/{request_id}/result/content")
    def result_content(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        execution_id: str | None = None,
    ) -> Response:
        envelope = use_cases.get_result_content.get(principal, request_id, execution_id)
        return _envelope(envelope)

    @router.get("/api/requests/{request_id}/executions")
    def executions(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        limit: Annotated[int, Query(ge=1)] = 20,
    ) -> Response:
        entries = use_cases.list_executions.list(principal, request_id, limit)
        return _json({"executions": [_execution(entry) for entry in entries]})

    # --- resume (docs/server.md §1.4) ------------------------------------------------------

    @router.post("/api/requests/{request_id}/resume")
    def resume(
        request_id: str,
        principal: Annotated[Principal, Depends(current_principal)],
        body: _ResumeBody | None = None,
    ) -> Response:
        resumed = use_cases.resume_request.resume(
            principal, request_id, None if body is None else body.reason
        )
        return _json(
            {
                "id": resumed.id,
                "status": resumed.status.value,
                "resumed_from": resumed.resumed_from.value,
                "warning": resumed.warning,
            }
        )

    return router
