"""The agent API (docs/protocol.md §3): paths, bodies and answers of dbward 0.2.

Bodies are read by hand rather than through FastAPI's body parameters, for three wire
details: claim and heartbeat are bodiless POSTs (a claim may carry our optional
`{"lease_duration_secs": N}`), malformed JSON is a 400 while well-formed JSON of the wrong
shape (an operation alias, a negative count) is a 422 as from axum, and unknown keys are
ignored (the protocol grows by adding fields). Types are strict, as serde's are.

Every route is `async`: the poll may be held for up to a minute without holding a thread;
the others hand their store work to the thread pool.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from adapters.http_api.app import DEFAULT_BODY_LIMIT
from adapters.http_api.auth import PublicForbidden, current_agent, current_principal
from application.server.agent_protocol.agents import AgentListing, ListAgents
from application.server.agent_protocol.claim import ClaimJob
from application.server.agent_protocol.explain import (
    ClaimDryRunJob,
    DryRunResultInput,
    PreflightResultInput,
    SubmitDryRunResult,
    SubmitPreflightResult,
)
from application.server.agent_protocol.heartbeat import RecordHeartbeat
from application.server.agent_protocol.poll import PollForWork, PollInput, PollReply
from application.server.agent_protocol.public_key import GetPublicKey
from application.server.agent_protocol.results import SubmitResult
from application.server.agent_protocol.schema_sync import SchemaSyncInput, SyncSchema
from application.server.requests.common import ServerDraining
from application.server.settings import ServerSettings
from domain.server.errors import ServerDomainError, Validation
from domain.server.rbac import Principal
from domain.shared.jobs import ActiveJobStatus, AgentStatus, ClaimedJob, JobResult
from domain.shared.operations import Operation

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "PREFLIGHT_RESULT_BODY_LIMIT",
    "SCHEMA_SYNC_BODY_LIMIT",
    "AgentUseCases",
    "agent_body_limit",
    "build_agent_router",
    "result_body_limit",
]

MIB = 1024 * 1024
SCHEMA_SYNC_BODY_LIMIT = 10 * MIB
PREFLIGHT_RESULT_BODY_LIMIT = 256 * 1024

_RESULT_PATH = re.compile(r"^/api/agent/jobs/[^/]+/result$")

U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
U64 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]

_M = TypeVar("_M", bound="_AgentBody")
_Input = TypeVar("_Input", bound="DataclassInstance")


def result_body_limit(settings: ServerSettings) -> int:
    """`2 * max_persist_bytes + 2 MiB` (22 MiB by default), as the reference's route."""
    return 2 * settings.result_storage.max_persist_bytes + 2 * MIB


def agent_body_limit(
    settings: ServerSettings, default: Callable[[str], int] = lambda _path: DEFAULT_BODY_LIMIT
) -> Callable[[str], int]:
    """The `body_limit_for` to give `create_app`: agent routes' limits, `default` elsewhere."""
    result_limit = result_body_limit(settings)

    def limit_for(path: str) -> int:
        if path == "/api/agent/schema-sync":
            return SCHEMA_SYNC_BODY_LIMIT
        if path == "/api/agent/preflight-result":
            return PREFLIGHT_RESULT_BODY_LIMIT
        if _RESULT_PATH.match(path):
            return result_limit
        return default(path)

    return limit_for


# --- bodies -----------------------------------------------------------------------------------


class _AgentBody(BaseModel):
    """Strict about types (like serde), lenient about extra keys (additive protocol)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _ScopeBody(_AgentBody):
    database: str
    environment: str


class _CapabilitiesBody(_AgentBody):
    scopes: list[_ScopeBody]
    # Canonical names only: an alias such as `execute_query` is a 422, as in the reference.
    operations: list[Operation] = []


class _ActiveJobBody(_AgentBody):
    request_id: str
    operation: str
    elapsed_secs: U64 = 0


class _StatusBody(_AgentBody):
    in_flight: U32
    in_flight_preflight: U32 = 0
    max_concurrent: U32
    draining: bool = False
    uptime_secs: U64 = 0
    active_jobs: list[_ActiveJobBody] = []


class _PollBody(_AgentBody):
    agent_id: str | None = None
    capabilities: _CapabilitiesBody
    status: _StatusBody | None = None
    limit: U32 | None = None
    agent_version: str | None = None
    # Ours, additive: the agent's package version, the hold it asks for, and the scopes
    # it stopped advertising because their database is down.
    agent_build: str | None = None
    wait_ms: U32 | None = None
    degraded_scopes: list[_ScopeBody] = []


class _ClaimBody(_AgentBody):
    lease_duration_secs: U32 | None = None


class _ResultBody(_AgentBody):
    success: bool
    result_data: str | None = None
    error_message: str | None = None
    rows_affected: U64 | None = None
    truncated: bool | None = None
    total_rows: U64 | None = None
    duration_ms: U64 | None = None


class _SchemaSyncBody(_AgentBody):
    database: str
    environment: str
    dialect: str
    status: str
    snapshot: Any = None
    error_message: str | None = None


class _DryRunResultBody(_AgentBody):
    claim_token: str
    result: Any = None
    error: str | None = None


class _PreflightResultBody(_AgentBody):
    job_id: str
    claim_token: str
    result: Any = None
    error: str | None = None


def _input(cls: type[_Input], body: _AgentBody) -> _Input:
    """The service's input dataclass, filled from the body's fields of the same names."""
    return cls(**{field.name: getattr(body, field.name) for field in dataclasses.fields(cls)})


async def _parse(request: Request, model: type[_M], *, optional: bool = False) -> _M | None:
    """The body as `model`: 400 for bad JSON, 422 for the wrong shape; None if absent."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return None
        raise Validation("request body is required")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise Validation("request body is not valid JSON") from None
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in errors[:5]
        )
        raise ServerDomainError("validation.unprocessable", problems, 422) from None


async def _required(request: Request, model: type[_M]) -> _M:
    body = await _parse(request, model)
    assert body is not None
    return body


def _draining() -> JSONResponse:
    """The reference's bare 503 body (no `code`): agents match on it."""
    return JSONResponse(status_code=503, content={"error": "server_shutting_down"})


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(
        content=orjson.dumps(content), status_code=status_code, media_type="application/json"
    )


# --- answers ----------------------------------------------------------------------------------


def _poll_reply(reply: PollReply) -> dict[str, Any]:
    if reply.draining:
        return {"jobs": []}
    body: dict[str, Any] = {
        "jobs": [
            {
                "id": job.id,
                "created_by": job.requester,
                "operation": job.operation.value,
                "environment": job.environment,
                "database": job.database,
                "detail": job.detail,
            }
            for job in reply.jobs
        ],
        "dry_run_jobs": [
            {
                "id": job.id,
                "request_id": job.request_id,
                "database": job.database,
                "environment": job.environment,
                "sql": job.sql,
            }
            for job in reply.dry_run_jobs
        ],
        "preflight_jobs": [
            {
                "id": job.id,
                "database": job.database,
                "environment": job.environment,
                "sql": job.sql,
                "claim_token": job.claim_token,
            }
            for job in reply.preflight_jobs
        ],
        "server_version": reply.server_version,
        "min_agent_version": reply.min_agent_version,
        "upgrade_required": reply.upgrade_required,
    }
    if reply.wait_ms is not None:
        body["wait_ms"] = reply.wait_ms
    return body


def _claim_reply(reply: ClaimedJob) -> dict[str, Any]:
    return {
        "execution_id": reply.execution_id,
        "request_id": reply.request_id,
        "execution_token": reply.execution_token,
        "operation": reply.operation,
        "database": reply.database,
        "environment": reply.environment,
        "detail": reply.detail,
        "statement_timeout_secs": reply.statement_timeout_secs,
        "max_rows": reply.max_rows,
        "lease_expires_at": reply.lease_expires_at,
        "execution_plan": reply.execution_plan,
        "execution_plan_json": reply.execution_plan_json,
    }


def _scopes(scopes: Any) -> list[dict[str, str]]:
    return [{"database": s.database, "environment": s.environment} for s in scopes]


def _agent_entry(listing: AgentListing) -> dict[str, Any]:
    view = listing.view
    return {
        "id": view.id,
        "status": view.status.value,
        "last_poll_ago_secs": view.last_poll_ago_secs,
        "in_flight": view.in_flight,
        "max_concurrent": view.max_concurrent,
        "uptime_secs": view.uptime_secs,
        "active_jobs": [
            {"request_id": j.request_id, "operation": j.operation, "elapsed_secs": j.elapsed_secs}
            for j in view.active_jobs
        ],
        "capabilities": {
            "scopes": _scopes(view.scopes),
            "operations": [op.value for op in listing.operations],
        },
        # Ours, additive.
        "degraded_scopes": _scopes(view.degraded_scopes),
        "agent_version": listing.agent_version,
        "agent_build": listing.agent_build,
        "agent_ids": list(listing.agent_ids),
    }


# --- the router -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AgentUseCases:
    """The use cases behind the agent routes, one for each thing a route does."""

    get_public_key: GetPublicKey
    poll_for_work: PollForWork
    claim_job: ClaimJob
    record_heartbeat: RecordHeartbeat
    submit_result: SubmitResult
    sync_schema: SyncSchema
    claim_dry_run_job: ClaimDryRunJob
    submit_dry_run_result: SubmitDryRunResult
    submit_preflight_result: SubmitPreflightResult
    list_agents: ListAgents


def build_agent_router(use_cases: AgentUseCases, *, is_draining: Callable[[], bool]) -> APIRouter:
    router = APIRouter()

    @router.get("/api/public-key")
    async def public_key(principal: Annotated[Principal, Depends(current_agent)]) -> Response:
        return _json({"public_key": use_cases.get_public_key.get(principal)})

    @router.post("/api/agent/poll")
    async def poll(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Response:
        # §3.2 step 1: a draining server answers before looking at the token's kind.
        if is_draining():
            return _json({"jobs": []})
        if not principal.is_agent:
            raise PublicForbidden("agent token required")
        body = await _required(request, _PollBody)
        status = body.status
        reply = await use_cases.poll_for_work.poll(
            principal,
            PollInput(
                scopes=tuple((s.database, s.environment) for s in body.capabilities.scopes),
                operations=tuple(dict.fromkeys(body.capabilities.operations)),
                status=None
                if status is None
                else AgentStatus(
                    in_flight=status.in_flight,
                    in_flight_preflight=status.in_flight_preflight,
                    max_concurrent=status.max_concurrent,
                    draining=status.draining,
                    uptime_secs=status.uptime_secs,
                    active_jobs=tuple(
                        ActiveJobStatus(j.request_id, j.operation, j.elapsed_secs)
                        for j in status.active_jobs
                    ),
                ),
                limit=body.limit,
                agent_version=body.agent_version,
                agent_build=body.agent_build,
                agent_id=body.agent_id,
                wait_ms=body.wait_ms,
                degraded_scopes=tuple((s.database, s.environment) for s in body.degraded_scopes),
            ),
        )
        return _json(_poll_reply(reply))

    @router.post("/api/agent/jobs/{request_id}/claim")
    async def claim(
        request_id: str, request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _parse(request, _ClaimBody, optional=True)
        lease = None if body is None else body.lease_duration_secs
        try:
            reply = await run_in_threadpool(use_cases.claim_job.claim, principal, request_id, lease)
        except ServerDraining:
            return _draining()
        return _json(_claim_reply(reply))

    @router.post("/api/agent/jobs/{execution_id}/heartbeat")
    async def heartbeat(
        execution_id: str, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        cancelled = await run_in_threadpool(
            use_cases.record_heartbeat.record, principal, execution_id
        )
        return _json({"cancelled": cancelled})

    @router.post("/api/agent/jobs/{execution_id}/result")
    async def result(
        execution_id: str,
        request: Request,
        principal: Annotated[Principal, Depends(current_agent)],
    ) -> Response:
        body = await _required(request, _ResultBody)
        request_id, status = await run_in_threadpool(
            use_cases.submit_result.submit,
            principal,
            execution_id,
            _input(JobResult, body),
        )
        return _json({"request_id": request_id, "status": status.value})

    @router.post("/api/agent/schema-sync")
    async def schema_sync(
        request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _required(request, _SchemaSyncBody)
        await run_in_threadpool(
            use_cases.sync_schema.sync,
            principal,
            _input(SchemaSyncInput, body),
        )
        return Response(status_code=200)

    @router.post("/api/agent/dry-run/{job_id}/claim")
    async def claim_dry_run(
        job_id: str, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        token = await run_in_threadpool(use_cases.claim_dry_run_job.claim, principal, job_id)
        return _json({"claim_token": token})

    @router.post("/api/agent/dry-run/{job_id}/result")
    async def dry_run_result(
        job_id: str, request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _required(request, _DryRunResultBody)
        await run_in_threadpool(
            use_cases.submit_dry_run_result.submit,
            principal,
            job_id,
            _input(DryRunResultInput, body),
        )
        return Response(status_code=200)

    @router.post("/api/agent/preflight-result")
    async def preflight_result(
        request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _required(request, _PreflightResultBody)
        await run_in_threadpool(
            use_cases.submit_preflight_result.submit,
            principal,
            _input(PreflightResultInput, body),
        )
        return Response(status_code=200)

    @router.get("/api/agents")
    async def agents(principal: Annotated[Principal, Depends(current_principal)]) -> Response:
        listings = await run_in_threadpool(use_cases.list_agents.list, principal)
        return _json({"agents": [_agent_entry(listing) for listing in listings]})

    return router
