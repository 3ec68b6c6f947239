"""The dbward 0.2 agent wire format (docs/protocol.md §3), in one place.

Request bodies are built as plain dicts whose insertion order is the reference agent's
struct field order, so `orjson.dumps` gives the same bytes a dbward 0.2 agent sends and
golden tests can pin them. Response bodies are checked with strict pydantic models that
ignore unknown keys (a newer server may add fields) but refuse wrong types, so a garbled
answer becomes a `MalformedServerResponse` naming the field instead of a `KeyError` deep
inside a service.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.agent.errors import MalformedServerResponse
from domain.shared.jobs import (
    ClaimedJob,
    DispatchedJob,
    DryRunJob,
    ExplainOutcome,
    HeartbeatReply,
    JobResult,
    PollRequest,
    PollResponse,
    PreflightJob,
    SchemaReport,
)

#: The reference declares these counters `u32`; serde refuses anything outside that range.
U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]

_Model = TypeVar("_Model", bound="_WireModel")


class _WireModel(BaseModel):
    """Strict about types (like serde), lenient about extra keys (additive protocol)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# --- request bodies ---------------------------------------------------------------------


def poll_body(req: PollRequest) -> dict[str, Any]:
    """`POST /api/agent/poll` body: the reference's field order, then our additive fields.

    `agent_id` is always null (the server identifies the agent by its token). `wait_ms`
    is sent only when long-polling is wanted, so classic polling is byte-identical to the
    reference apart from `agent_build`, which dbward 0.2 servers ignore.
    """
    status = req.status
    body: dict[str, Any] = {
        "agent_id": None,
        "capabilities": {
            "scopes": [
                {"database": scope.database, "environment": scope.environment}
                for scope in req.capabilities.scopes
            ],
            "operations": [str(operation.value) for operation in req.capabilities.operations],
        },
        "status": {
            "in_flight": status.in_flight,
            "in_flight_preflight": status.in_flight_preflight,
            "max_concurrent": status.max_concurrent,
            "draining": status.draining,
            "uptime_secs": status.uptime_secs,
            "active_jobs": [
                {
                    "request_id": job.request_id,
                    "operation": job.operation,
                    "elapsed_secs": job.elapsed_secs,
                }
                for job in status.active_jobs
            ],
        },
        "limit": req.limit,
        "agent_version": req.agent_version,
        "agent_build": req.agent_build,
    }
    if req.wait_ms > 0:
        body["wait_ms"] = req.wait_ms
    if req.degraded_scopes:
        body["degraded_scopes"] = [
            {"database": scope.database, "environment": scope.environment}
            for scope in req.degraded_scopes
        ]
    return body


def claim_body(lease_duration_secs: int) -> dict[str, Any]:
    """Our additive claim body: the lease we ask for (the reference server ignores it)."""
    return {"lease_duration_secs": lease_duration_secs}


def result_body(result: JobResult) -> dict[str, Any]:
    """`POST .../result` body: `success` always, every other field omitted when None."""
    body: dict[str, Any] = {"success": result.success}
    optional: tuple[tuple[str, Any], ...] = (
        ("result_data", result.result_data),
        ("error_message", result.error_message),
        ("rows_affected", result.rows_affected),
        ("truncated", result.truncated),
        ("total_rows", result.total_rows),
        ("duration_ms", result.duration_ms),
    )
    for name, value in optional:
        if value is not None:
            body[name] = value
    return body


def schema_sync_body(report: SchemaReport) -> dict[str, Any]:
    """`POST /api/agent/schema-sync` body; every key is present, nulls included."""
    return {
        "database": report.scope.database,
        "environment": report.scope.environment,
        "dialect": report.dialect,
        "status": report.status,
        "snapshot": report.snapshot,
        "error_message": report.error_message,
    }


def dry_run_result_body(claim_token: str, outcome: ExplainOutcome) -> dict[str, Any]:
    """`POST /api/agent/dry-run/{id}/result`: a plan with a null error, or the reverse.

    The server marks the job failed whenever `error` is non-null, so an error always wins
    over a plan.
    """
    if outcome.error is not None:
        return {"claim_token": claim_token, "result": None, "error": outcome.error}
    return {"claim_token": claim_token, "result": outcome.plan, "error": None}


def preflight_result_body(job_id: str, claim_token: str, outcome: ExplainOutcome) -> dict[str, Any]:
    """`POST /api/agent/preflight-result`: exactly one of `result` and `error` (else 400)."""
    if outcome.error is not None:
        return {"job_id": job_id, "claim_token": claim_token, "error": outcome.error}
    return {"job_id": job_id, "claim_token": claim_token, "result": outcome.plan}


def encode(body: dict[str, Any]) -> bytes:
    """Serialize a request body compactly, the way serde_json does."""
    return orjson.dumps(body)


# --- response bodies --------------------------------------------------------------------


class _PolledJob(_WireModel):
    # created_by and detail are sent too; the agent never reads them (§3.2).
    id: str
    operation: str
    database: str
    environment: str


class _PolledDryRunJob(_WireModel):
    id: str
    request_id: str
    database: str
    environment: str
    sql: str


class _PolledPreflightJob(_WireModel):
    id: str
    database: str
    environment: str
    sql: str
    # The reference agent sends a missing claim token as "" (§9.2).
    claim_token: str | None = None


class _PollReply(_WireModel):
    # A draining reference server answers `{"jobs": []}`: every key defaults (§3.2 step 1).
    jobs: list[_PolledJob] | None = None
    dry_run_jobs: list[_PolledDryRunJob] | None = None
    preflight_jobs: list[_PolledPreflightJob] | None = None
    server_version: str | None = None
    min_agent_version: str | None = None
    upgrade_required: bool | None = None
    # Our servers echo the hold they honoured; anything else means "not long-polling".
    wait_ms: Any = None


class _ClaimReply(_WireModel):
    execution_id: str
    request_id: str
    execution_token: str
    operation: str
    database: str
    environment: str
    detail: str
    statement_timeout_secs: U32 | None = None
    max_rows: U32 | None = None
    lease_expires_at: str
    execution_plan: list[str] | None = None
    execution_plan_json: str | None = None


class _HeartbeatReply(_WireModel):
    cancelled: bool


class _DryRunClaimReply(_WireModel):
    claim_token: str


class _PublicKeyReply(_WireModel):
    public_key: str


def decode_json(content: bytes, what: str) -> Any:
    """Parse a 2xx body as JSON, or say which answer was not JSON."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        preview = content[:80].decode("utf-8", errors="replace")
        raise MalformedServerResponse(f"{what}: body is not JSON ({exc}): {preview!r}") from None


def _validate(model: type[_Model], data: Any, what: str) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        location = ".".join(str(part) for part in first["loc"]) or "(body)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise MalformedServerResponse(f"{what}: field {location}: {first['msg']}{more}") from None


def parse_poll_response(data: Any) -> PollResponse:
    reply = _validate(_PollReply, data, "poll response")
    held = reply.wait_ms
    held_wait_ms = held if isinstance(held, int) and not isinstance(held, bool) else None
    return PollResponse(
        jobs=tuple(
            DispatchedJob(
                id=job.id,
                operation=job.operation,
                database=job.database,
                environment=job.environment,
            )
            for job in reply.jobs or ()
        ),
        dry_run_jobs=tuple(
            DryRunJob(
                id=job.id,
                request_id=job.request_id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
            )
            for job in reply.dry_run_jobs or ()
        ),
        preflight_jobs=tuple(
            PreflightJob(
                id=job.id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
                claim_token=job.claim_token or "",
            )
            for job in reply.preflight_jobs or ()
        ),
        server_version=reply.server_version,
        min_agent_version=reply.min_agent_version,
        upgrade_required=bool(reply.upgrade_required),
        held_wait_ms=held_wait_ms,
    )


def parse_claim_response(data: Any) -> ClaimedJob:
    reply = _validate(_ClaimReply, data, "claim response")
    return ClaimedJob(
        execution_id=reply.execution_id,
        request_id=reply.request_id,
        execution_token=reply.execution_token,
        operation=reply.operation,
        database=reply.database,
        environment=reply.environment,
        detail=reply.detail,
        statement_timeout_secs=reply.statement_timeout_secs,
        max_rows=reply.max_rows,
        lease_expires_at=reply.lease_expires_at,
        execution_plan=None if reply.execution_plan is None else tuple(reply.execution_plan),
        execution_plan_json=reply.execution_plan_json,
    )


def parse_heartbeat_response(data: Any) -> HeartbeatReply:
    return HeartbeatReply(
        cancelled=_validate(_HeartbeatReply, data, "heartbeat response").cancelled
    )


def parse_dry_run_claim_response(data: Any) -> str:
    """The claim token that must accompany the dry-run result."""
    return _validate(_DryRunClaimReply, data, "dry-run claim response").claim_token


def parse_public_key_response(data: Any) -> str:
    """The server's Ed25519 public key as hex, surrounding whitespace removed."""
    return _validate(_PublicKeyReply, data, "public-key response").public_key.strip()
