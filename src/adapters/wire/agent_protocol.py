"""The bodies of the agent protocol (docs/protocol.md §3): one pydantic model per message.

Both programs go through this module: the agent's HTTP client encodes its requests and
decodes the server's answers here, the server's agent routes decode those requests and
encode their answers here, and the test doubles do the same, so the two sides cannot
drift apart. Each message maps to and from one type of `domain.shared.jobs` (or a plain
string where the message is one).

* **Strict about types, lenient about keys**, as serde is: `"2"` is not an integer,
  counters must fit their range, but unknown keys are ignored, because the protocol grows
  by adding fields (§2.3, §15).
* **A model's field order is the order on the wire**: dbward 0.2's struct order, then our
  additive fields, so encoding gives the bytes a dbward 0.2 peer sends and golden tests
  can pin them. An encoder leaves a key out by not setting it.
* **Bodies are written compactly with orjson**, as serde_json writes them; plans and
  snapshots inside them are passed through untouched.
* **Decoding raises only this module's errors**: `NotJsonError` for a body that is not JSON,
  `WrongShapeError` (listing the problems) for JSON of the wrong shape. Each side turns them
  into its own answer: a malformed reply for the agent, a 400 or a 422 for the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.shared.jobs import (
    ActiveJobStatus,
    AgentStatus,
    ClaimedJob,
    ClaimRequest,
    DispatchedJob,
    DryRunJob,
    DryRunResult,
    ExplainOutcome,
    HeartbeatReply,
    JobResult,
    PollClaim,
    PollRequest,
    PollResponse,
    PreflightJob,
    PreflightResult,
    ResultReceipt,
    SchemaReport,
)
from domain.shared.operations import Operation
from domain.shared.scopes import Capabilities, Scope

__all__ = [
    "DRAINING_POLL_RESPONSE",
    "NotJsonError",
    "Problem",
    "WireFormatError",
    "WrongShapeError",
    "body_schema",
    "decode_claim_request",
    "decode_claimed_job",
    "decode_dry_run_claim",
    "decode_dry_run_result",
    "decode_heartbeat_reply",
    "decode_job_result",
    "decode_poll_request",
    "decode_poll_response",
    "decode_preflight_result",
    "decode_public_key",
    "decode_schema_report",
    "encode_claim_request",
    "encode_claimed_job",
    "encode_dry_run_claim",
    "encode_dry_run_result",
    "encode_heartbeat_reply",
    "encode_job_result",
    "encode_poll_request",
    "encode_poll_response",
    "encode_preflight_result",
    "encode_public_key",
    "encode_result_receipt",
    "encode_schema_report",
]

#: Counters dbward 0.2 declares `u32` / `u64`: serde refuses anything outside the range.
U32 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF)]
U64 = Annotated[int, Field(ge=0, le=0xFFFF_FFFF_FFFF_FFFF)]


class _Body(BaseModel):
    """Strict about types (like serde), lenient about extra keys (additive protocol)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


_B = TypeVar("_B", bound=_Body)


# --- errors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason a body does not fit its message."""

    #: The field, dotted (`capabilities.operations.0`); "" for the body as a whole.
    location: str
    message: str


class WireFormatError(ValueError):
    """A body that does not fit the message it should carry."""


class NotJsonError(WireFormatError):
    """The body is not JSON at all (an empty body included)."""


class WrongShapeError(WireFormatError):
    """Well-formed JSON of the wrong shape: a missing field, a wrong type, a bad value."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        super().__init__("; ".join(f"{p.location or '(body)'}: {p.message}" for p in problems))
        #: Every problem, in pydantic's order; never empty.
        self.problems = problems


def _decode(model: type[_B], raw: bytes) -> _B:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        for error in errors:
            if error["type"] == "json_invalid":
                raise NotJsonError(error["msg"]) from None
        raise WrongShapeError(
            tuple(
                Problem(".".join(str(part) for part in error["loc"]), error["msg"])
                for error in errors
            )
        ) from None


def _encode(body: _Body) -> bytes:
    """The keys set on `body`, in field order, as compact JSON.

    Bodies are built with `model_construct`: what our own side sends is not validated
    again, so an odd value (a negative uptime after a clock jump) reaches the peer, which
    refuses it with a clear answer, instead of failing inside the sender.
    """
    return orjson.dumps(body.model_dump(exclude_unset=True))


# --- GET /api/public-key (§3.1) ---------------------------------------------------------


class _PublicKey(_Body):
    public_key: str


def encode_public_key(public_key_hex: str) -> bytes:
    return _encode(_PublicKey.model_construct(public_key=public_key_hex))


def decode_public_key(raw: bytes) -> str:
    """The server's Ed25519 public key as hex, surrounding whitespace removed."""
    return _decode(_PublicKey, raw).public_key.strip()


# --- POST /api/agent/poll: the request (§3.2) -------------------------------------------


class _Scope(_Body):
    database: str
    environment: str

    @classmethod
    def of(cls, scope: Scope) -> _Scope:
        return cls.model_construct(database=scope.database, environment=scope.environment)

    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


class _Capabilities(_Body):
    scopes: list[_Scope]
    # Canonical names only: an alias such as `execute_query` is a 422, as in dbward 0.2.
    operations: list[Operation] = []


class _ActiveJob(_Body):
    request_id: str
    operation: str
    elapsed_secs: U64 = 0


class _AgentStatus(_Body):
    in_flight: U32
    in_flight_preflight: U32 = 0
    max_concurrent: U32
    draining: bool = False
    uptime_secs: U64 = 0
    active_jobs: list[_ActiveJob] = []


class _PollClaim(_Body):
    lease_duration_secs: U32 | None = None


class _PollRequest(_Body):
    agent_id: str | None = None
    capabilities: _Capabilities
    status: _AgentStatus | None = None
    limit: U32 | None = None
    agent_version: str | None = None
    # Ours, additive: the agent's package version, the hold it asks for, and the scopes
    # it stopped advertising because their database is down.
    agent_build: str | None = None
    wait_ms: U32 | None = None
    degraded_scopes: list[_Scope] = []
    # Ours, additive: claim the answer's jobs for this agent (§3.2).
    claim: _PollClaim | None = None


def encode_poll_request(request: PollRequest) -> bytes:
    """dbward 0.2's keys always (nulls included), then our additive ones when they say
    something: `wait_ms` only to ask for a hold, `degraded_scopes` only when a database is
    down, `claim` only when the agent wants its jobs claimed. A classic poll is so
    byte-identical to a dbward 0.2 agent's apart from `agent_build`, which a dbward 0.2
    server ignores.
    """
    status = request.status
    fields: dict[str, Any] = {
        "agent_id": request.agent_id,
        "capabilities": _Capabilities.model_construct(
            scopes=[_Scope.of(scope) for scope in request.capabilities.scopes],
            operations=list(request.capabilities.operations),
        ),
        "status": None
        if status is None
        else _AgentStatus.model_construct(
            in_flight=status.in_flight,
            in_flight_preflight=status.in_flight_preflight,
            max_concurrent=status.max_concurrent,
            draining=status.draining,
            uptime_secs=status.uptime_secs,
            active_jobs=[
                _ActiveJob.model_construct(
                    request_id=job.request_id,
                    operation=job.operation,
                    elapsed_secs=job.elapsed_secs,
                )
                for job in status.active_jobs
            ],
        ),
        "limit": request.limit,
        "agent_version": request.agent_version,
        "agent_build": request.agent_build,
    }
    if request.wait_ms > 0:
        fields["wait_ms"] = request.wait_ms
    if request.degraded_scopes:
        fields["degraded_scopes"] = [_Scope.of(scope) for scope in request.degraded_scopes]
    if request.claim is not None:
        fields["claim"] = _PollClaim.model_construct(
            lease_duration_secs=request.claim.lease_duration_secs
        )
    return _encode(_PollRequest.model_construct(**fields))


def decode_poll_request(raw: bytes) -> PollRequest:
    """An absent `wait_ms` is 0 (answer at once), as a null one is."""
    body = _decode(_PollRequest, raw)
    status = body.status
    return PollRequest(
        capabilities=Capabilities(
            scopes=tuple(scope.scope() for scope in body.capabilities.scopes),
            operations=tuple(body.capabilities.operations),
        ),
        status=None
        if status is None
        else AgentStatus(
            in_flight=status.in_flight,
            in_flight_preflight=status.in_flight_preflight,
            max_concurrent=status.max_concurrent,
            draining=status.draining,
            uptime_secs=status.uptime_secs,
            active_jobs=tuple(
                ActiveJobStatus(job.request_id, job.operation, job.elapsed_secs)
                for job in status.active_jobs
            ),
        ),
        limit=body.limit,
        agent_version=body.agent_version,
        agent_build=body.agent_build,
        wait_ms=body.wait_ms or 0,
        degraded_scopes=tuple(scope.scope() for scope in body.degraded_scopes),
        agent_id=body.agent_id,
        claim=None if body.claim is None else PollClaim(body.claim.lease_duration_secs),
    )


# --- POST /api/agent/poll: the answer (§3.2, §9, §11) -----------------------------------


class _DispatchedJob(_Body):
    id: str
    # Informative: the agent reads neither, so an answer without them is fine.
    created_by: str = ""
    operation: str
    environment: str
    database: str
    detail: str = ""


class _DryRunJob(_Body):
    id: str
    request_id: str
    database: str
    environment: str
    sql: str


class _PreflightJob(_Body):
    id: str
    database: str
    environment: str
    sql: str
    # A missing claim token is read as "", as the dbward 0.2 agent does (§9.2).
    claim_token: str | None = None


class _ClaimedJob(_Body):
    execution_id: str
    request_id: str
    execution_token: str
    operation: str
    database: str
    environment: str
    detail: str
    # Every key is always sent; an older server may leave out the optional ones.
    statement_timeout_secs: U32 | None = None
    max_rows: U32 | None = None
    lease_expires_at: str
    execution_plan: list[str] | None = None
    execution_plan_json: str | None = None


class _PollResponse(_Body):
    # A draining dbward 0.2 server answers `{"jobs": []}` only: every key is optional.
    jobs: list[_DispatchedJob] | None = None
    dry_run_jobs: list[_DryRunJob] | None = None
    preflight_jobs: list[_PreflightJob] | None = None
    server_version: str | None = None
    min_agent_version: str | None = None
    upgrade_required: bool | None = None
    # Ours, additive: the hold the server honoured. Anything but an integer is read as
    # "this server does not long-poll", never as a malformed answer.
    wait_ms: Any = None
    # Ours, additive: the jobs claimed for the agent because its poll asked (§3.2).
    claimed_jobs: list[_ClaimedJob] | None = None


#: A draining server's answer to every poll, held ones included (§3.2 step 1, §11.2).
DRAINING_POLL_RESPONSE: Final = _encode(_PollResponse.model_construct(jobs=[]))


def encode_poll_response(response: PollResponse) -> bytes:
    """Every key, `wait_ms` only when the server took the long-poll path (§11.2) and
    `claimed_jobs` only when it claimed some (§3.2)."""
    fields: dict[str, Any] = {
        "jobs": [
            _DispatchedJob.model_construct(
                id=job.id,
                created_by=job.created_by,
                operation=job.operation,
                environment=job.environment,
                database=job.database,
                detail=job.detail,
            )
            for job in response.jobs
        ],
        "dry_run_jobs": [
            _DryRunJob.model_construct(
                id=job.id,
                request_id=job.request_id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
            )
            for job in response.dry_run_jobs
        ],
        "preflight_jobs": [
            _PreflightJob.model_construct(
                id=job.id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
                claim_token=job.claim_token,
            )
            for job in response.preflight_jobs
        ],
        "server_version": response.server_version,
        "min_agent_version": response.min_agent_version,
        "upgrade_required": response.upgrade_required,
    }
    if response.held_wait_ms is not None:
        fields["wait_ms"] = response.held_wait_ms
    if response.claimed_jobs:
        fields["claimed_jobs"] = [_claimed_job_model(job) for job in response.claimed_jobs]
    return _encode(_PollResponse.model_construct(**fields))


def decode_poll_response(raw: bytes) -> PollResponse:
    """Every key optional: what a missing one means is `PollResponse`'s default."""
    body = _decode(_PollResponse, raw)
    held = body.wait_ms
    return PollResponse(
        jobs=tuple(
            DispatchedJob(
                id=job.id,
                operation=job.operation,
                database=job.database,
                environment=job.environment,
                created_by=job.created_by,
                detail=job.detail,
            )
            for job in body.jobs or ()
        ),
        dry_run_jobs=tuple(
            DryRunJob(
                id=job.id,
                request_id=job.request_id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
            )
            for job in body.dry_run_jobs or ()
        ),
        preflight_jobs=tuple(
            PreflightJob(
                id=job.id,
                database=job.database,
                environment=job.environment,
                sql=job.sql,
                claim_token=job.claim_token or "",
            )
            for job in body.preflight_jobs or ()
        ),
        server_version=body.server_version,
        min_agent_version=body.min_agent_version,
        upgrade_required=bool(body.upgrade_required),
        held_wait_ms=held if isinstance(held, int) and not isinstance(held, bool) else None,
        claimed_jobs=tuple(_claimed_job(job) for job in body.claimed_jobs or ()),
    )


# --- POST /api/agent/jobs/{request_id}/claim (§3.3) -------------------------------------


class _ClaimRequest(_Body):
    lease_duration_secs: U32 | None = None
    agent_id: str | None = None


def encode_claim_request(request: ClaimRequest) -> bytes:
    """`agent_id` only when there is one, so a nameless claim is the lease alone."""
    fields: dict[str, Any] = {"lease_duration_secs": request.lease_duration_secs}
    if request.agent_id is not None:
        fields["agent_id"] = request.agent_id
    return _encode(_ClaimRequest.model_construct(**fields))


def decode_claim_request(raw: bytes) -> ClaimRequest:
    """A bodiless claim, dbward 0.2's, is `ClaimRequest()`: the policy lease, and checked
    against every agent of its token."""
    if not raw.strip():
        return ClaimRequest()
    body = _decode(_ClaimRequest, raw)
    return ClaimRequest(body.lease_duration_secs, body.agent_id)


def _claimed_job_model(job: ClaimedJob) -> _ClaimedJob:
    return _ClaimedJob.model_construct(
        execution_id=job.execution_id,
        request_id=job.request_id,
        execution_token=job.execution_token,
        operation=job.operation,
        database=job.database,
        environment=job.environment,
        detail=job.detail,
        statement_timeout_secs=job.statement_timeout_secs,
        max_rows=job.max_rows,
        lease_expires_at=job.lease_expires_at,
        execution_plan=None if job.execution_plan is None else list(job.execution_plan),
        execution_plan_json=job.execution_plan_json,
    )


def _claimed_job(body: _ClaimedJob) -> ClaimedJob:
    return ClaimedJob(
        execution_id=body.execution_id,
        request_id=body.request_id,
        execution_token=body.execution_token,
        operation=body.operation,
        database=body.database,
        environment=body.environment,
        detail=body.detail,
        statement_timeout_secs=body.statement_timeout_secs,
        max_rows=body.max_rows,
        lease_expires_at=body.lease_expires_at,
        execution_plan=None if body.execution_plan is None else tuple(body.execution_plan),
        execution_plan_json=body.execution_plan_json,
    )


def encode_claimed_job(job: ClaimedJob) -> bytes:
    return _encode(_claimed_job_model(job))


def decode_claimed_job(raw: bytes) -> ClaimedJob:
    return _claimed_job(_decode(_ClaimedJob, raw))


# --- POST /api/agent/jobs/{execution_id}/heartbeat (§3.4): no body, this answer ---------


class _HeartbeatReply(_Body):
    cancelled: bool


def encode_heartbeat_reply(reply: HeartbeatReply) -> bytes:
    return _encode(_HeartbeatReply.model_construct(cancelled=reply.cancelled))


def decode_heartbeat_reply(raw: bytes) -> HeartbeatReply:
    return HeartbeatReply(cancelled=_decode(_HeartbeatReply, raw).cancelled)


# --- POST /api/agent/jobs/{execution_id}/result (§3.5) ----------------------------------


class _JobResult(_Body):
    success: bool
    result_data: str | None = None
    error_message: str | None = None
    rows_affected: U64 | None = None
    truncated: bool | None = None
    # Accepted and ignored by the server.
    total_rows: U64 | None = None
    duration_ms: U64 | None = None


def encode_job_result(result: JobResult) -> bytes:
    """`success` always; every other field only when it has a value."""
    optional: dict[str, Any] = {
        "result_data": result.result_data,
        "error_message": result.error_message,
        "rows_affected": result.rows_affected,
        "truncated": result.truncated,
        "total_rows": result.total_rows,
        "duration_ms": result.duration_ms,
    }
    present = {name: value for name, value in optional.items() if value is not None}
    return _encode(_JobResult.model_construct(success=result.success, **present))


def decode_job_result(raw: bytes) -> JobResult:
    body = _decode(_JobResult, raw)
    return JobResult(
        success=body.success,
        result_data=body.result_data,
        error_message=body.error_message,
        rows_affected=body.rows_affected,
        truncated=body.truncated,
        total_rows=body.total_rows,
        duration_ms=body.duration_ms,
    )


class _ResultReceipt(_Body):
    request_id: str
    status: str


def encode_result_receipt(receipt: ResultReceipt) -> bytes:
    """The server's answer; the agent does not read it (a 2xx is all it needs)."""
    return _encode(
        _ResultReceipt.model_construct(request_id=receipt.request_id, status=receipt.status)
    )


# --- POST /api/agent/schema-sync (§3.6) -------------------------------------------------


class _SchemaReport(_Body):
    database: str
    environment: str
    dialect: str
    status: str
    snapshot: Any = None
    error_message: str | None = None


def encode_schema_report(report: SchemaReport) -> bytes:
    """All six keys, nulls included."""
    return _encode(
        _SchemaReport.model_construct(
            database=report.scope.database,
            environment=report.scope.environment,
            dialect=report.dialect,
            status=report.status,
            snapshot=report.snapshot,
            error_message=report.error_message,
        )
    )


def decode_schema_report(raw: bytes) -> SchemaReport:
    """Dialect and status are checked by the server's use case, which answers 400."""
    body = _decode(_SchemaReport, raw)
    return SchemaReport(
        scope=Scope(body.database, body.environment),
        dialect=body.dialect,
        status=body.status,
        snapshot=body.snapshot,
        error_message=body.error_message,
    )


# --- POST /api/agent/dry-run/{job_id}/claim (§3.7): no body, this answer ----------------


class _DryRunClaim(_Body):
    claim_token: str


def encode_dry_run_claim(claim_token: str) -> bytes:
    return _encode(_DryRunClaim.model_construct(claim_token=claim_token))


def decode_dry_run_claim(raw: bytes) -> str:
    """The claim token that must come back with the dry run's result."""
    return _decode(_DryRunClaim, raw).claim_token


# --- POST /api/agent/dry-run/{job_id}/result (§3.8) -------------------------------------


class _DryRunResult(_Body):
    claim_token: str
    result: Any = None
    error: str | None = None


def encode_dry_run_result(result: DryRunResult) -> bytes:
    """All three keys: a plan with a null error, or the reverse. The server marks the job
    failed whenever `error` is non-null, so an error always wins over a plan."""
    outcome = result.outcome
    plan = outcome.plan if outcome.error is None else None
    return _encode(
        _DryRunResult.model_construct(
            claim_token=result.claim_token, result=plan, error=outcome.error
        )
    )


def decode_dry_run_result(raw: bytes) -> DryRunResult:
    body = _decode(_DryRunResult, raw)
    return DryRunResult(body.claim_token, ExplainOutcome(plan=body.result, error=body.error))


# --- POST /api/agent/preflight-result (§3.9) --------------------------------------------


class _PreflightResult(_Body):
    job_id: str
    claim_token: str
    result: Any = None
    error: str | None = None


def encode_preflight_result(result: PreflightResult) -> bytes:
    """Only the key the outcome has: the server refuses both, or neither, with a 400."""
    outcome = result.outcome
    answer = {"result": outcome.plan} if outcome.error is None else {"error": outcome.error}
    return _encode(
        _PreflightResult.model_construct(
            job_id=result.job_id, claim_token=result.claim_token, **answer
        )
    )


def decode_preflight_result(raw: bytes) -> PreflightResult:
    """Both or neither of `result` and `error` decode as they are: the use case refuses."""
    body = _decode(_PreflightResult, raw)
    return PreflightResult(
        body.job_id, body.claim_token, ExplainOutcome(plan=body.result, error=body.error)
    )


# --- the bodies' JSON Schemas, for the server's OpenAPI document -------------------------

#: The message each request decoder reads.
_REQUEST_MODELS: Final[dict[Callable[[bytes], object], type[_Body]]] = {
    decode_poll_request: _PollRequest,
    decode_claim_request: _ClaimRequest,
    decode_job_result: _JobResult,
    decode_schema_report: _SchemaReport,
    decode_dry_run_result: _DryRunResult,
    decode_preflight_result: _PreflightResult,
}


def body_schema(decode: Callable[[bytes], object]) -> dict[str, Any]:
    """The JSON Schema of the request body `decode` reads, nested models inlined.

    The server's agent routes read their bodies by hand (docs/protocol.md §2.3), so FastAPI
    cannot describe them: the routes hand this schema to the OpenAPI document instead, and
    the document then lists every route with its body. Inlined because a `$defs` reference
    would not resolve inside the OpenAPI document.
    """
    schema = _REQUEST_MODELS[decode].model_json_schema()
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, definitions)
    return inlined


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node
