"""The agent API (docs/protocol.md §3): paths, bodies and answers of dbward 0.2.

Every body, read or written, goes through `adapters.wire.agent_protocol`, the module the
agent's client uses too. Bodies are read by hand rather than through FastAPI's body
parameters, for the wire details of §2.3: claim and heartbeat are bodiless POSTs (a claim
may carry our optional `{"lease_duration_secs": N, "agent_id": "…"}`), malformed JSON is
a 400 while well-formed JSON of the wrong shape (an operation alias, a negative count) is
a 422 as from axum, and unknown keys are ignored (the protocol grows by adding fields). Types are
strict, as serde's are.

Every route is `async`: the poll may be held for up to a minute without holding a thread;
the others hand their store work to the thread pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from adapters.http_api.app import DEFAULT_BODY_LIMIT
from adapters.http_api.auth import PublicForbidden, current_agent, current_principal
from adapters.http_api.routing import api_router
from adapters.wire import agent_protocol as wire
from application.server.agent_protocol.agents import AgentListing, ListAgents
from application.server.agent_protocol.claim import ClaimJob
from application.server.agent_protocol.explain import (
    ClaimDryRunJob,
    SubmitDryRunResult,
    SubmitPreflightResult,
)
from application.server.agent_protocol.heartbeat import RecordHeartbeat
from application.server.agent_protocol.poll import PollForWork, PollReply
from application.server.agent_protocol.public_key import GetPublicKey
from application.server.agent_protocol.results import SubmitResult
from application.server.agent_protocol.schema_sync import SyncSchema
from application.server.ports.store import StoreCalls
from application.server.requests.common import ServerDraining
from application.server.settings import ServerSettings
from application.server.store_calls import IN_THREADS
from domain.server.errors import ServerDomainError, Validation
from domain.server.rbac import Principal
from domain.shared.jobs import (
    DispatchedJob,
    DryRunJob,
    HeartbeatReply,
    PollRequest,
    PollResponse,
    PreflightJob,
    ResultReceipt,
)

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

#: How many shape problems a 422 lists (docs/protocol.md §2.3).
_MAX_LISTED_PROBLEMS = 5

_Message = TypeVar("_Message")


def result_body_limit(settings: ServerSettings) -> int:
    """`2 * max_persist_bytes + 2 MiB` (22 MiB by default), as dbward 0.2's route."""
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


async def _read(
    request: Request, decode: Callable[[bytes], _Message], *, required: bool = True
) -> _Message:
    """The body as its message: 400 when missing or not JSON, 422 for the wrong shape."""
    raw = await request.body()
    if required and not raw.strip():
        raise Validation("request body is required")
    try:
        return decode(raw)
    except wire.NotJsonError:
        raise Validation("request body is not valid JSON") from None
    except wire.WrongShapeError as exc:
        problems = "; ".join(
            f"{problem.location or 'body'}: {problem.message}"
            for problem in exc.problems[:_MAX_LISTED_PROBLEMS]
        )
        raise ServerDomainError("validation.unprocessable", problems, 422) from None


def _unique_operations(poll: PollRequest) -> PollRequest:
    """§3.2 step 2: operations are deduplicated (the use case deduplicates scopes)."""
    capabilities = poll.capabilities
    unique = tuple(dict.fromkeys(capabilities.operations))
    return dataclasses.replace(
        poll, capabilities=dataclasses.replace(capabilities, operations=unique)
    )


def _documented_body(decode: Callable[[bytes], object], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` naming the body a route reads by hand, so /openapi.json lists it."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": wire.body_schema(decode)}},
        }
    }


# --- answers ----------------------------------------------------------------------------------


def _json(content: bytes) -> Response:
    return Response(content=content, status_code=200, media_type="application/json")


def _draining() -> JSONResponse:
    """dbward 0.2's bare 503 body (no `code`): agents match on it."""
    return JSONResponse(status_code=503, content={"error": "server_shutting_down"})


class _HangUpWatch:
    """Whether the agent is still connected, for a poll whose jobs are claimed for it.

    The body is read, so the next ASGI message can only be `http.disconnect`: one waiting
    task per poll notices it, where asking at the moment (`Request.is_disconnected`)
    costs a cancel scope each time.
    """

    def __init__(self, request: Request) -> None:
        self._request = request
        self._next: asyncio.Task[object] | None = None

    def __enter__(self) -> _HangUpWatch:
        self._next = asyncio.ensure_future(self._request.receive())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._next is not None:
            self._next.cancel()

    async def connected(self) -> bool:
        await asyncio.sleep(0)  # a hang-up already seen by the server reaches the task
        return self._next is not None and not self._next.done()


def _poll_response(reply: PollReply) -> PollResponse:
    """The use case's records as the poll's answer: what the agent is offered."""
    return PollResponse(
        jobs=tuple(
            DispatchedJob(
                id=job.id,
                operation=job.operation.value,
                database=job.database,
                environment=job.environment,
                created_by=job.requester,
                detail=job.detail,
            )
            for job in reply.jobs
        ),
        dry_run_jobs=tuple(
            DryRunJob(
                id=job.id,
                request_id=job.request_id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
            )
            for job in reply.dry_run_jobs
        ),
        preflight_jobs=tuple(
            PreflightJob(
                id=job.id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
                # The poll claimed these jobs, so each carries the claim's token.
                claim_token=job.claim_token or "",
            )
            for job in reply.preflight_jobs
        ),
        server_version=reply.server_version,
        min_agent_version=reply.min_agent_version,
        upgrade_required=reply.upgrade_required,
        held_wait_ms=reply.wait_ms,
        claimed_jobs=reply.claimed_jobs,
    )


def _scopes(scopes: Any) -> list[dict[str, str]]:
    return [{"database": s.database, "environment": s.environment} for s in scopes]


def _agent_entry(listing: AgentListing) -> dict[str, Any]:
    view = listing.view
    return {
        "id": view.id,
        # Ours, additive: the agent's own name under its token ("" when it sent none).
        "agent_id": view.agent_id,
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


def build_agent_router(
    use_cases: AgentUseCases,
    *,
    is_draining: Callable[[], bool],
    calls: StoreCalls = IN_THREADS,
) -> APIRouter:
    """The agent protocol's routes; the claim, heartbeat and result are short store work
    (`calls`), a result body bound for a file long work."""
    router = api_router()

    @router.get("/api/public-key")
    async def public_key(principal: Annotated[Principal, Depends(current_agent)]) -> Response:
        return _json(wire.encode_public_key(use_cases.get_public_key.get(principal)))

    @router.post("/api/agent/poll", openapi_extra=_documented_body(wire.decode_poll_request))
    async def poll(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Response:
        # §3.2 step 1: a draining server answers before looking at the token's kind.
        if is_draining():
            return _json(wire.DRAINING_POLL_RESPONSE)
        if not principal.is_agent:
            raise PublicForbidden("agent token required")
        body = await _read(request, wire.decode_poll_request)
        if body.claim is None:
            reply = await use_cases.poll_for_work.poll(principal, _unique_operations(body))
        else:
            with _HangUpWatch(request) as watch:
                reply = await use_cases.poll_for_work.poll(
                    principal, _unique_operations(body), watch.connected
                )
        if reply.draining:
            return _json(wire.DRAINING_POLL_RESPONSE)
        return _json(wire.encode_poll_response(_poll_response(reply)))

    @router.post(
        "/api/agent/jobs/{request_id}/claim",
        openapi_extra=_documented_body(wire.decode_claim_request, required=False),
    )
    async def claim(
        request_id: str, request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _read(request, wire.decode_claim_request, required=False)
        try:
            job = await calls.short(
                use_cases.claim_job.claim,
                principal,
                request_id,
                body.lease_duration_secs,
                body.agent_id,
            )
        except ServerDraining:
            return _draining()
        return _json(wire.encode_claimed_job(job))

    @router.post("/api/agent/jobs/{execution_id}/heartbeat")
    async def heartbeat(
        execution_id: str, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        cancelled = await calls.short(use_cases.record_heartbeat.record, principal, execution_id)
        return _json(wire.encode_heartbeat_reply(HeartbeatReply(cancelled=cancelled)))

    @router.post(
        "/api/agent/jobs/{execution_id}/result",
        openapi_extra=_documented_body(wire.decode_job_result),
    )
    async def result(
        execution_id: str,
        request: Request,
        principal: Annotated[Principal, Depends(current_agent)],
    ) -> Response:
        body = await _read(request, wire.decode_job_result)
        submit = use_cases.submit_result
        run = calls.long if submit.is_long_work(body) else calls.short
        request_id, status = await run(submit.submit, principal, execution_id, body)
        return _json(wire.encode_result_receipt(ResultReceipt(request_id, status.value)))

    @router.post(
        "/api/agent/schema-sync", openapi_extra=_documented_body(wire.decode_schema_report)
    )
    async def schema_sync(
        request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _read(request, wire.decode_schema_report)
        await run_in_threadpool(use_cases.sync_schema.sync, principal, body)
        return Response(status_code=200)

    @router.post("/api/agent/dry-run/{job_id}/claim")
    async def claim_dry_run(
        job_id: str, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        token = await run_in_threadpool(use_cases.claim_dry_run_job.claim, principal, job_id)
        return _json(wire.encode_dry_run_claim(token))

    @router.post(
        "/api/agent/dry-run/{job_id}/result",
        openapi_extra=_documented_body(wire.decode_dry_run_result),
    )
    async def dry_run_result(
        job_id: str, request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _read(request, wire.decode_dry_run_result)
        await run_in_threadpool(use_cases.submit_dry_run_result.submit, principal, job_id, body)
        return Response(status_code=200)

    @router.post(
        "/api/agent/preflight-result", openapi_extra=_documented_body(wire.decode_preflight_result)
    )
    async def preflight_result(
        request: Request, principal: Annotated[Principal, Depends(current_agent)]
    ) -> Response:
        body = await _read(request, wire.decode_preflight_result)
        await run_in_threadpool(use_cases.submit_preflight_result.submit, principal, body)
        return Response(status_code=200)

    @router.get("/api/agents")
    async def agents(principal: Annotated[Principal, Depends(current_principal)]) -> Response:
        listings = await run_in_threadpool(use_cases.list_agents.list, principal)
        return _json(orjson.dumps({"agents": [_agent_entry(listing) for listing in listings]}))

    return router
