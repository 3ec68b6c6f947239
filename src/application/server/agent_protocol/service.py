"""The server side of the agent protocol (agent-protocol.md §3, spec/server.md §1.5, §7.3).

Wire-compatible with dbward 0.2: same decisions, same status codes, same execution
token bytes. Our additions, each one optional for an old peer:

* **Long-poll** (DESIGN.md §3 improvement 1): a poll carrying `wait_ms` (capped at 60 s)
  with nothing to return is held until matching work appears or the wait ends. The waiter
  is armed before the store is read, so a dispatch committed in between still wakes it;
  the store is re-read every second anyway (replicas on one PostgreSQL do not share
  notifications). A held poll answers with `"wait_ms": <ms held>`, which tells our agent
  the server long-polls.
* **Requested leases** (improvement 12): a claim may carry `{"lease_duration_secs": N}`;
  `domain.server.execution_policies.lease_seconds` clamps it. A bodiless claim gets the
  reference lease.
* **Statement timeouts** follow the agent brief: the execution policy's timeout (workflow
  override included) when an `[[execution_policies]]` entry matches the scope, else
  null, so the agent's own `statement_timeout_secs` applies.
* **Late results** (improvement 4): a result for an execution the lease sweep declared
  lost is accepted while no newer execution of its request exists.
* **Version gate**: `min_agent_version` is a setting, not the server's own version.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from application.server.audit_events import about_request, audit_event
from application.server.ports.result_relay import ResultRelay
from application.server.ports.services import (
    DispatchNotifier,
    ExecutionTokenSigner,
    ResultContentStore,
    ServerClock,
    dispatch_topic,
    preflight_topic,
    request_topic,
)
from application.server.ports.work.agents import AgentRow, AgentUpsert
from application.server.ports.work.databases import SchemaSnapshot
from application.server.ports.work.executions import (
    ExecutionAlreadyClaimed,
    ExecutionCompletion,
    ExecutionRecord,
    ExecutionStatus,
    ResultSummary,
)
from application.server.ports.work.explain_jobs import (
    DryRunJobRecord,
    DryRunOutcome,
    DryRunStatus,
    PreflightJobRecord,
    PreflightOutcome,
    PreflightStatus,
)
from application.server.ports.work.requests import RequestRecord, RequestUpdate
from application.server.requests.common import LONG_POLL_RECHECK_SECS, ServerDraining, new_uuid
from application.server.requests.decision_trace import requester_role
from application.server.requests.results import MAX_STORED_ERROR_BYTES
from application.server.requests.snapshots import workflow_from_snapshot
from application.server.settings import AuditRedaction, ServerSettings
from domain.server.agent_registry import (
    AgentView,
    agent_view,
    record_from_poll,
    validate_poll_scopes,
)
from domain.server.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServerDomainError,
    Validation,
)
from domain.server.execution_policies import (
    MIGRATION_MUTATIONS,
    ExecutionPolicy,
    ResultPolicy,
    effective_statement_timeout,
    lease_seconds,
)
from domain.server.rbac import AgentExecution, Permission, Principal, authorize
from domain.server.request_lifecycle import RequestStatus, Trigger, transition
from domain.server.workflows import WILDCARD
from domain.shared.execution_token import detail_hash, signed_message
from domain.shared.jobs import AgentStatus, ClaimedJob, JobResult
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreSession

__all__ = [
    "DEFAULT_POLL_LIMIT",
    "MAX_DRY_RUN_JOBS",
    "MAX_POLL_LIMIT",
    "MAX_POLL_SCOPES",
    "MAX_POLL_TEXT_CHARS",
    "MAX_POLL_WAIT_MS",
    "MAX_PREFLIGHT_ERROR_BYTES",
    "MAX_PREFLIGHT_RESULT_BYTES",
    "TOKEN_TTL_SECS",
    "AgentListing",
    "AgentProtocolService",
    "DryRunResultInput",
    "PollInput",
    "PollReply",
    "PreflightResultInput",
    "SchemaSyncInput",
    "rfc3339_nanos",
    "version_lt",
]

DEFAULT_POLL_LIMIT = 10
MAX_POLL_LIMIT = 20
MAX_DRY_RUN_JOBS = 10
#: The longest hold a poll may ask for.
MAX_POLL_WAIT_MS = 60_000
#: Execution tokens are valid this long after signing.
TOKEN_TTL_SECS = 300
MAX_PREFLIGHT_RESULT_BYTES = 256 * 1024
MAX_PREFLIGHT_ERROR_BYTES = 4096
#: At most this many scopes (and as many degraded scopes) in one poll: each is a term of
#: the store's `(database = ? AND environment = ?) OR …` filter.
MAX_POLL_SCOPES = 256
#: Longest `agent_version` / `agent_build`, and `active_jobs[]` request id / operation.
MAX_POLL_TEXT_CHARS = 256
#: The longest error class (the text before the first ':') the audit log keeps.
_MAX_ERROR_CLASS_CHARS = 64
#: `max_concurrent` / `in_flight` for the preflight budget when a poll has no status.
_PREFLIGHT_DEFAULT_MAX_CONCURRENT = 1

_SCHEMA_DIALECTS = frozenset({"postgresql", "mysql"})
_SCHEMA_STATUSES = frozenset({"ready", "failed", "partial"})
_LEADING_DIGITS = re.compile(r"\d+")


def rfc3339_nanos(moment: datetime) -> str:
    """`2026-05-01T12:05:00.123456789+00:00`: chrono's `to_rfc3339` with nanoseconds."""
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond:06d}000+00:00"


def _version_key(version: str) -> tuple[int, ...]:
    """Numeric components; a component like `0-rc1` counts as its leading digits."""
    parts: list[int] = []
    for component in version.split("."):
        match = _LEADING_DIGITS.match(component)
        if match is not None:
            # Leading zeros do not count; past 64 digits (far beyond any real version, and
            # under `int()`'s digit limit) the component compares by its first 64 digits.
            parts.append(int(match.group().lstrip("0")[:64] or "0"))
    return tuple(parts)


def version_lt(version: str, minimum: str) -> bool:
    """Dot-separated numeric comparison, as the reference's `version_lt`.

    Unlike the reference, a pre-release suffix does not drop its component
    (`0.2.0-rc1` is not older than `0.2.0`).
    """
    return _version_key(version) < _version_key(minimum)


# --- inputs and outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class PollInput:
    """A parsed `POST /api/agent/poll` body. Operations are already canonical."""

    scopes: tuple[tuple[str, str], ...]
    operations: tuple[Operation, ...] = ()
    status: AgentStatus | None = None
    limit: int | None = None
    agent_version: str | None = None
    agent_build: str | None = None
    agent_id: str | None = None
    wait_ms: int | None = None
    degraded_scopes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PollReply:
    jobs: tuple[RequestRecord, ...] = ()
    dry_run_jobs: tuple[DryRunJobRecord, ...] = ()
    preflight_jobs: tuple[PreflightJobRecord, ...] = ()
    server_version: str = ""
    min_agent_version: str = ""
    upgrade_required: bool = False
    #: Our additive echo: how long the poll was held; None when no hold was honoured.
    wait_ms: int | None = None
    #: The server is draining: the answer is the bare `{"jobs": []}`.
    draining: bool = False

    @property
    def has_work(self) -> bool:
        return bool(self.jobs or self.dry_run_jobs or self.preflight_jobs)


@dataclass(frozen=True)
class SchemaSyncInput:
    database: str
    environment: str
    dialect: str
    status: str
    snapshot: Any = None
    error_message: str | None = None


@dataclass(frozen=True)
class DryRunResultInput:
    claim_token: str
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class PreflightResultInput:
    job_id: str
    claim_token: str
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class AgentListing:
    """One `GET /api/agents` entry: the derived view plus what only the store knows."""

    view: AgentView
    agent_version: str | None
    agent_build: str | None
    agent_ids: tuple[str, ...]
    operations: tuple[Operation, ...]


class AgentProtocolService:
    """Every agent endpoint's use case, plus `GET /api/agents`."""

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        signer: ExecutionTokenSigner,
        notifier: DispatchNotifier,
        result_store: ResultContentStore,
        server_version: str,
        result_slots: ResultRelay,
        draining: Callable[[], bool] = lambda: False,
        new_id: Callable[[], str] = new_uuid,
        recheck_secs: float = LONG_POLL_RECHECK_SECS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._signer = signer
        self._notifier = notifier
        self._result_store = result_store
        self._server_version = server_version
        # Shared with the other service: the agent side fills it, the client side reads it.
        self._slots = result_slots
        self._draining = draining
        self._new_id = new_id
        self._recheck_secs = recheck_secs

    def is_draining(self) -> bool:
        return self._draining()

    @property
    def min_agent_version(self) -> str:
        return self._settings.min_agent_version

    # --- public key -----------------------------------------------------------------------

    def public_key(self, principal: Principal) -> str:
        authorize(principal, Permission.AGENT_OPERATE)
        return self._signer.public_key_hex()

    # --- poll -----------------------------------------------------------------------------

    async def poll(self, principal: Principal, body: PollInput) -> PollReply:
        """§3.2, in order; then, with `wait_ms` and nothing to return, the hold."""
        if self._draining():
            return PollReply(draining=True)
        if not principal.is_agent:
            raise Forbidden("agent token required")
        _check_poll_sizes(body)
        scopes = validate_poll_scopes(body.scopes)
        degraded = validate_poll_scopes(body.degraded_scopes) if body.degraded_scopes else ()
        authorize(principal, Permission.AGENT_OPERATE)
        upgrade = bool(body.agent_version) and version_lt(
            body.agent_version or "", self.min_agent_version
        )
        wait_ms = min(max(body.wait_ms or 0, 0), MAX_POLL_WAIT_MS)
        limit = min(DEFAULT_POLL_LIMIT if body.limit is None else body.limit, MAX_POLL_LIMIT)
        if wait_ms == 0 or upgrade:
            return await asyncio.to_thread(
                self._poll_once, principal, body, scopes, degraded, limit, upgrade
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with self._notifier.arm([dispatch_topic(scope) for scope in scopes]) as waiter:
            reply = await asyncio.to_thread(
                self._poll_once, principal, body, scopes, degraded, limit, upgrade
            )
            if reply.jobs or reply.preflight_jobs:
                return replace(reply, wait_ms=0)
            if reply.has_work:
                # Only dry-run jobs: answer now, without the echo, so an agent that cannot
                # take them paces itself instead of re-polling into the same answer.
                return reply
            deadline = started + wait_ms / 1000
            while (remaining := deadline - loop.time()) > 0:
                await waiter.wait(min(self._recheck_secs, remaining))
                if self._draining():
                    return PollReply(draining=True)
                if await asyncio.to_thread(self._has_work, body, scopes, limit):
                    reply = await asyncio.to_thread(
                        self._poll_once, principal, body, scopes, degraded, limit, upgrade
                    )
                    if reply.has_work:
                        break
        held = max(int((loop.time() - started) * 1000), 0)
        if not reply.has_work:
            await asyncio.to_thread(self._touch, principal, body, scopes, degraded)
        return replace(reply, wait_ms=held)

    def _poll_once(
        self,
        principal: Principal,
        body: PollInput,
        scopes: tuple[Scope, ...],
        degraded: tuple[Scope, ...],
        limit: int,
        upgrade: bool,
    ) -> PollReply:
        now = self._clock.now()
        with self._store.write() as session:
            self._register(session, principal, body, scopes, degraded, now)
            jobs: list[RequestRecord] = []
            dry_runs: list[DryRunJobRecord] = []
            preflights: list[PreflightJobRecord] = []
            if not upgrade:
                jobs = session.work.dispatched_requests(scopes, body.operations, limit)
                dry_runs = session.work.pending_dry_run_jobs(scopes, MAX_DRY_RUN_JOBS)
                budget = self._preflight_budget(body.status, len(jobs))
                if budget > 0:
                    preflights = session.work.claim_preflight_jobs(
                        scopes, principal.subject_id, self._new_id(), now, budget
                    )
        return PollReply(
            jobs=tuple(jobs),
            dry_run_jobs=tuple(dry_runs),
            preflight_jobs=tuple(preflights),
            server_version=self._server_version,
            min_agent_version=self.min_agent_version,
            upgrade_required=upgrade,
        )

    def _has_work(self, body: PollInput, scopes: tuple[Scope, ...], limit: int) -> bool:
        """A read-only look while holding: is there anything `_poll_once` would return?"""
        now = self._clock.now()
        with self._store.read() as session:
            if limit > 0 and session.work.dispatched_requests(scopes, body.operations, 1):
                return True
            if session.work.pending_dry_run_jobs(scopes, 1):
                return True
            return self._preflight_budget(body.status, 0) > 0 and (
                session.work.has_pending_preflight(scopes, now)
            )

    def _touch(
        self,
        principal: Principal,
        body: PollInput,
        scopes: tuple[Scope, ...],
        degraded: tuple[Scope, ...],
    ) -> None:
        """After an empty hold: the agent was here all along, so it is not offline."""
        now = self._clock.now()
        with self._store.write() as session:
            self._register(session, principal, body, scopes, degraded, now)

    def _register(
        self,
        session: StoreSession,
        principal: Principal,
        body: PollInput,
        scopes: tuple[Scope, ...],
        degraded: tuple[Scope, ...],
        now: datetime,
    ) -> None:
        record = record_from_poll(
            principal.subject_id,
            scopes,
            body.status,
            now,
            agent_id=body.agent_id,
            degraded_scopes=degraded,
            agent_version=body.agent_version,
            agent_build=body.agent_build,
        )
        upsert = AgentUpsert(record=record, operations=body.operations, token_id=principal.token_id)
        if session.work.upsert_agent(upsert, now):
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="agent.registered",
                    category="agent",
                    actor=principal,
                    resource_type="agent",
                    resource_id=principal.subject_id,
                    metadata={
                        "scopes": [str(scope) for scope in scopes],
                        "agent_version": body.agent_version,
                        "agent_build": body.agent_build,
                    },
                )
            )

    @staticmethod
    def _preflight_budget(status: AgentStatus | None, jobs: int) -> int:
        """§3.2 step 7: `max_concurrent - in_flight - in_flight_preflight - jobs`, at least 0."""
        if status is None:
            return max(_PREFLIGHT_DEFAULT_MAX_CONCURRENT - jobs, 0)
        return max(status.max_concurrent - status.in_flight - status.in_flight_preflight - jobs, 0)

    # --- claim ----------------------------------------------------------------------------

    def claim(
        self, principal: Principal, request_id: str, requested_lease_secs: int | None = None
    ) -> ClaimedJob:
        """§3.3 in order, in one transaction."""
        if self._draining():
            raise ServerDraining()
        now = self._clock.now()
        with self._store.write() as session:
            agent = session.work.get_agent(principal.subject_id)
            if agent is None:
                raise NotFound("agent not registered")
            authorize(principal, Permission.AGENT_OPERATE)
            record = session.work.get_request(request_id)
            if record is None:
                raise NotFound("request not found")
            transition(record.status, Trigger.CLAIM)
            if record.scope not in agent.record.scopes:
                raise Forbidden(
                    f"agent {principal.subject_id} does not serve "
                    f"{record.database}/{record.environment}"
                )
            if record.operation in MIGRATION_MUTATIONS:
                session.work.lock_migrations(record.scope)
                if session.work.migration_active(record.scope, record.id):
                    raise Conflict("migration already running for this database")
            authorize(
                principal, Permission.AGENT_OPERATE, AgentExecution(agent_id=principal.subject_id)
            )
            policy, matched = self._execution_policy(record.scope)
            workflow = workflow_from_snapshot(record.workflow_snapshot_json)
            override = workflow.statement_timeout_secs if workflow is not None else None
            timeout = (
                effective_statement_timeout(policy, record.operation, override) if matched else None
            )
            lease = lease_seconds(policy, record.operation, requested_lease_secs, override)
            lease_expires_at = now + timedelta(seconds=lease)
            token = self._sign(record, now)
            if not session.work.update_request_status(
                record.id,
                allowed_from={RequestStatus.DISPATCHED},
                to=RequestStatus.RUNNING,
                now=now,
            ):
                raise Conflict("concurrent status change")
            execution = ExecutionRecord(
                id=self._new_id(),
                request_id=record.id,
                agent_id=principal.subject_id,
                status=ExecutionStatus.CLAIMED,
                token=token,
                lease_secs=lease,
                lease_expires_at=lease_expires_at,
                started_at=now,
                created_at=now,
            )
            try:
                session.work.insert_execution(execution)
            except ExecutionAlreadyClaimed:
                raise Conflict("concurrent status change") from None
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="execution.started",
                    category="execution",
                    actor=principal,
                    metadata={
                        "agent_id": principal.subject_id,
                        "lease_secs": lease,
                        "statement_timeout_secs": timeout,
                    },
                    **about_request(record, execution.id),
                )
            )
        self._notifier.notify(request_topic(record.id))
        plan = (
            None
            if record.execution_plan_json is None
            else tuple(json.loads(record.execution_plan_json))
        )
        return ClaimedJob(
            execution_id=execution.id,
            request_id=record.id,
            execution_token=token,
            operation=record.operation.value,
            database=record.database,
            environment=record.environment,
            detail=record.detail,
            statement_timeout_secs=timeout,
            max_rows=policy.max_rows,
            lease_expires_at=rfc3339_nanos(lease_expires_at),
            execution_plan=plan,
            execution_plan_json=record.execution_plan_json,
        )

    def _execution_policy(self, scope: Scope) -> tuple[ExecutionPolicy, bool]:
        """The policy for the scope, and whether a configured entry matched it."""
        matched = any(
            policy.database in (WILDCARD, scope.database)
            and policy.environment in (WILDCARD, scope.environment)
            for policy in self._settings.execution_policies
        )
        return self._settings.execution_policy_for(scope.database, scope.environment), matched

    def _sign(self, record: RequestRecord, now: datetime) -> str:
        """The execution token string of agent-protocol.md §4.1, signed with Ed25519."""
        operation = record.operation.value
        hashed = detail_hash(operation, record.detail, record.execution_plan_json)
        expires_at = rfc3339_nanos(now + timedelta(seconds=TOKEN_TTL_SECS))
        role = requester_role(record)
        message = signed_message(
            request_id=record.id,
            operation=operation,
            environment=record.environment,
            database=record.database,
            detail_hash=hashed,
            expires_at=expires_at,
            requester_role=role,
            requester_subject_id=record.requester,
        )
        token = {
            "request_id": record.id,
            "operation": operation,
            "environment": record.environment,
            "database": record.database,
            "detail_hash": hashed,
            "issued_at": rfc3339_nanos(now),
            "expires_at": expires_at,
            "signature": self._signer.sign(message).hex(),
            "requester_role": role,
            "requester_subject_id": record.requester,
        }
        return json.dumps(token, separators=(",", ":"), ensure_ascii=False)

    # --- heartbeat ------------------------------------------------------------------------

    def heartbeat(self, principal: Principal, execution_id: str) -> bool:
        """§3.4: extend the lease; True tells the agent to cancel."""
        authorize(principal, Permission.AGENT_OPERATE)
        now = self._clock.now()
        with self._store.write() as session:
            execution = self._owned_execution(session, principal, execution_id)
            if execution.status is not ExecutionStatus.CLAIMED:
                raise Conflict(f"execution is {execution.status.value}, cannot heartbeat")
            record = session.work.get_request(execution.request_id)
            if record is None:
                return True
            if not session.work.extend_lease(
                execution.id, now + timedelta(seconds=execution.lease_secs)
            ):
                return True
            return record.status is RequestStatus.CANCELLED

    def _owned_execution(
        self, session: StoreSession, principal: Principal, execution_id: str
    ) -> ExecutionRecord:
        execution = session.work.get_execution(execution_id)
        if execution is None:
            raise NotFound("execution not found")
        if execution.agent_id != principal.subject_id:
            raise Forbidden("this execution belongs to another agent")
        return execution

    # --- result ---------------------------------------------------------------------------

    def submit_result(
        self, principal: Principal, execution_id: str, body: JobResult
    ) -> tuple[str, RequestStatus]:
        """§3.5, with late completion accepted (see the module docstring).

        Races are decided in the write transaction, never from the first read: each
        attempt stores its content under its own key (`<request>/<execution>/<attempt>`),
        the result row records the key that won, and a losing attempt deletes only its
        own file. Whether a result is "late" is also decided there, so a lease sweep that
        commits between the read and the write cannot turn an acceptable result into a 409.
        """
        authorize(principal, Permission.AGENT_OPERATE)
        with self._store.read() as session:
            execution = self._owned_execution(session, principal, execution_id)
            record = session.work.get_request(execution.request_id)
            if record is None:
                raise ServerDomainError("internal_error", "the execution's request is missing", 500)
        # Only a live execution or one the lease sweep failed can still take a result;
        # every other status is final, so refusing on this read is safe.
        if execution.status is not ExecutionStatus.CLAIMED and not execution.lost_by_lease:
            raise Conflict(f"execution is {execution.status.value}, cannot submit result")
        transition(record.status, Trigger.complete(success=body.success))
        data = body.result_data
        data_bytes = None if data is None else data.encode("utf-8", "surrogatepass")
        limit = self._settings.result_storage.max_persist_bytes
        if data_bytes is not None and len(data_bytes) > limit:
            raise PayloadTooLarge(f"result size {len(data_bytes)} exceeds limit {limit}")
        policy = self._settings.result_policy_for(record.database, record.environment)
        persist = data_bytes is not None and (
            not body.success or (not record.no_store and policy.persists_successes)
        )
        # Not persisted (stream-only policy, or a request with no_store): relayed in memory.
        relay = body.success and data is not None and not persist
        now = self._clock.now()
        key = f"{record.id}/{execution.id}/{uuid.uuid4().hex}"
        if persist:
            assert data_bytes is not None
            self._result_store.put(key, data_bytes)
        try:
            final = self._record_result(
                principal, execution, body, now, key if persist else "", data_bytes, policy
            )
        except BaseException:
            if persist:
                self._result_store.delete(key)  # this attempt's own file, never the winner's
            raise
        if relay:
            assert data is not None
            self._slots.put(execution.id, data)
        self._notifier.notify(request_topic(record.id))
        return record.id, final

    def _record_result(
        self,
        principal: Principal,
        execution: ExecutionRecord,
        body: JobResult,
        now: datetime,
        storage_key: str,
        data_bytes: bytes | None,
        policy: ResultPolicy,
    ) -> RequestStatus:
        error = None
        if not body.success:
            error = _truncate(body.error_message or "execution failed", MAX_STORED_ERROR_BYTES)
        completion = ExecutionCompletion(
            status=ExecutionStatus.COMPLETED if body.success else ExecutionStatus.FAILED,
            finished_at=now,
            error_message=error,
        )
        with self._store.write() as session:
            late = False
            if not session.work.complete_execution(execution.id, completion):
                # Not live any more (on PostgreSQL the UPDATE waited for a concurrent
                # sweep or result to commit, so these reads see what it wrote). A lease
                # loss with no newer execution is a late completion; anything else lost.
                refusal = self._late_refusal(session, execution.id)
                if refusal is not None:
                    raise Conflict(refusal)
                late = True
                if not session.work.complete_execution(
                    execution.id, replace(completion, late=True)
                ):
                    raise Conflict("execution already completed")
            record = session.work.get_request(execution.request_id)
            if record is None:
                raise ServerDomainError("internal_error", "the execution's request is missing", 500)
            final = transition(record.status, Trigger.complete(success=body.success))
            if final is not record.status and not session.work.update_request_status(
                record.id,
                allowed_from={record.status},
                to=final,
                now=now,
                changes=RequestUpdate(resolved_at=now),
            ):
                raise Conflict("concurrent status change")
            truncated, truncation_reason = _truncation(body)
            stored = bool(storage_key) and data_bytes is not None
            retention = policy.retention_days
            session.work.insert_result(
                ResultSummary(
                    id=f"res-{execution.id}",
                    request_id=record.id,
                    execution_id=execution.id,
                    success=body.success,
                    rows_affected=body.rows_affected,
                    duration_ms=body.duration_ms,
                    truncated=truncated,
                    truncation_reason=truncation_reason,
                    error_message=error,
                    storage_backend=self._settings.result_storage.backend if stored else None,
                    storage_key=storage_key if stored else "",
                    content_length=len(data_bytes) if stored and data_bytes else 0,
                    checksum_sha256=hashlib.sha256(data_bytes).hexdigest()
                    if stored and data_bytes is not None
                    else None,
                    retention_days=retention,
                    stored_at=now,
                    expires_at=now + timedelta(days=retention) if stored else None,
                )
            )
            metadata: dict[str, Any] = {"agent_id": principal.subject_id, "late": late}
            if body.success and body.rows_affected is not None:
                metadata["rows_affected"] = body.rows_affected
            if body.duration_ms is not None:
                metadata["duration_ms"] = body.duration_ms
            if body.success and record.operation in (Operation.MIGRATE_UP, Operation.MIGRATE_DOWN):
                metadata.update(_migration_outcome(body.result_data))
            reason = None
            if error is not None:
                reason, redacted = _audit_error(error, self._settings.audit.redaction)
                if redacted:
                    metadata["error_length"] = len(error)
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="execution.completed" if body.success else "execution.failed",
                    category="execution",
                    actor=principal,
                    outcome="success" if body.success else "failure",
                    reason=reason,
                    metadata=metadata,
                    **about_request(record, execution.id),
                )
            )
        return final

    @staticmethod
    def _late_refusal(session: StoreSession, execution_id: str) -> str | None:
        """Inside the write transaction: None when the result is an acceptable late
        completion (failed by the lease sweep, its request `execution_lost`, no newer
        execution), else why it is refused."""
        current = session.work.get_execution(execution_id)
        if current is None or not current.lost_by_lease:
            return "execution already completed"
        record = session.work.get_request(current.request_id)
        if (
            record is not None
            and record.status is RequestStatus.EXECUTION_LOST
            and not session.work.newer_execution_exists(current)
        ):
            return None
        return f"execution is {current.status.value}, cannot submit result"

    # --- schema sync ----------------------------------------------------------------------

    def schema_sync(self, principal: Principal, body: SchemaSyncInput) -> None:
        """§3.6: store the snapshot of one scope the agent serves."""
        authorize(principal, Permission.AGENT_OPERATE)
        if body.dialect not in _SCHEMA_DIALECTS:
            raise Validation("invalid dialect")
        if body.status not in _SCHEMA_STATUSES:
            raise Validation("invalid status")
        if body.status == "ready" and body.snapshot is None:
            raise Validation("snapshot is required when status is ready")
        scope = Scope(body.database, body.environment)
        now = self._clock.now()
        with self._store.write() as session:
            self._serving_agent(session, principal, scope)
            if not self._settings.is_registered(scope.database, scope.environment):
                raise Validation("database/environment not registered")
            session.work.upsert_schema_snapshot(
                SchemaSnapshot(
                    database=scope.database,
                    environment=scope.environment,
                    status=body.status,
                    dialect=body.dialect,
                    collected_at=now,
                    agent_id=principal.subject_id,
                    snapshot_json=None
                    if body.snapshot is None
                    else json.dumps(body.snapshot, separators=(",", ":")),
                    error_message=body.error_message,
                )
            )
            tables = body.snapshot.get("tables") if isinstance(body.snapshot, dict) else None
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="schema.snapshot_failed"
                    if body.status == "failed"
                    else "schema.snapshot_updated",
                    category="agent",
                    actor=principal,
                    outcome="failure" if body.status == "failed" else "success",
                    resource_type="schema",
                    resource_id=f"{scope.database}:{scope.environment}",
                    database=scope.database,
                    environment=scope.environment,
                    reason=body.error_message,
                    metadata={
                        "dialect": body.dialect,
                        "status": body.status,
                        "tables": len(tables) if isinstance(tables, list) else None,
                    },
                )
            )

    def _serving_agent(self, session: StoreSession, principal: Principal, scope: Scope) -> AgentRow:
        agent = session.work.get_agent(principal.subject_id)
        if agent is None:
            raise Forbidden("agent not registered")
        if scope not in agent.record.scopes:
            raise Forbidden(f"agent does not serve {scope.database}/{scope.environment}")
        return agent

    # --- dry-run EXPLAIN ------------------------------------------------------------------

    def claim_dry_run(self, principal: Principal, job_id: str) -> str:
        """§3.7: the claim token that must come back with the result."""
        authorize(principal, Permission.AGENT_OPERATE)
        now = self._clock.now()
        with self._store.write() as session:
            job = session.work.get_dry_run_job(job_id)
            if job is None:
                raise Validation("dry-run job not found")
            self._serving_agent(session, principal, job.scope)
            claim_token = self._new_id()
            if not session.work.claim_dry_run_job(job.id, principal.subject_id, claim_token, now):
                raise Conflict("already_claimed")
        return claim_token

    def submit_dry_run_result(
        self, principal: Principal, job_id: str, body: DryRunResultInput
    ) -> None:
        """§3.8: an error wins over a plan."""
        authorize(principal, Permission.AGENT_OPERATE)
        now = self._clock.now()
        if body.error is not None:
            outcome = DryRunOutcome(
                status=DryRunStatus.FAILED,
                completed_at=now,
                error_message=_truncate(body.error, MAX_STORED_ERROR_BYTES),
            )
        else:
            outcome = DryRunOutcome(
                status=DryRunStatus.COMPLETED,
                completed_at=now,
                result_json="{}" if body.result is None else json.dumps(body.result),
            )
        with self._store.write() as session:
            job = session.work.get_dry_run_job(job_id)
            if job is None or not session.work.finish_dry_run_job(
                job_id, principal.subject_id, body.claim_token, outcome
            ):
                raise Conflict("dry-run job is not claimed by this agent with this token")
        self._notifier.notify(request_topic(job.request_id))

    # --- preflight EXPLAIN ----------------------------------------------------------------

    def submit_preflight_result(self, principal: Principal, body: PreflightResultInput) -> None:
        """§3.9: exactly one of `result` and `error`; a late or foreign answer is 410."""
        authorize(principal, Permission.AGENT_OPERATE)
        if (body.result is None) == (body.error is None):
            raise Validation("exactly one of result and error is required")
        now = self._clock.now()
        if body.result is not None:
            serialized = json.dumps(body.result, separators=(",", ":"))
            if len(serialized.encode()) > MAX_PREFLIGHT_RESULT_BYTES:
                raise PayloadTooLarge(
                    f"preflight result exceeds {MAX_PREFLIGHT_RESULT_BYTES} bytes"
                )
            outcome = PreflightOutcome(
                status=PreflightStatus.COMPLETED, completed_at=now, result_json=serialized
            )
        else:
            error = body.error or ""
            if len(error.encode()) > MAX_PREFLIGHT_ERROR_BYTES:
                raise PayloadTooLarge(f"preflight error exceeds {MAX_PREFLIGHT_ERROR_BYTES} bytes")
            outcome = PreflightOutcome(
                status=PreflightStatus.ERROR, completed_at=now, error_message=error
            )
        with self._store.write() as session:
            if not session.work.finish_preflight_job(
                body.job_id, principal.subject_id, body.claim_token, outcome
            ):
                raise Gone("preflight job already completed or expired")
        self._notifier.notify(preflight_topic(body.job_id))

    # --- GET /api/agents --------------------------------------------------------------------

    def list_agents(self, principal: Principal) -> tuple[AgentListing, ...]:
        authorize(principal, Permission.METRICS_VIEW)
        now = self._clock.now()
        with self._store.read() as session:
            rows = session.work.list_agents()
        return tuple(
            AgentListing(
                view=agent_view(row.record, now),
                agent_version=row.record.agent_version,
                agent_build=row.record.agent_build,
                agent_ids=row.agent_ids,
                operations=row.operations,
            )
            for row in rows
        )


# --- helpers ----------------------------------------------------------------------------------


def _check_poll_sizes(body: PollInput) -> None:
    """400 for a poll too big to handle: scope lists and free-text fields are capped."""
    for name, scopes in (
        ("capabilities.scopes", body.scopes),
        ("degraded_scopes", body.degraded_scopes),
    ):
        if len(scopes) > MAX_POLL_SCOPES:
            raise Validation(f"{name}: at most {MAX_POLL_SCOPES} scopes per poll")
    texts: list[tuple[str, str | None]] = [
        ("agent_version", body.agent_version),
        ("agent_build", body.agent_build),
        ("agent_id", body.agent_id),
    ]
    if body.status is not None:
        for job in body.status.active_jobs:
            texts += [
                ("active_jobs.request_id", job.request_id),
                ("active_jobs.operation", job.operation),
            ]
    for name, text in texts:
        if text is not None and len(text) > MAX_POLL_TEXT_CHARS:
            raise Validation(f"{name}: at most {MAX_POLL_TEXT_CHARS} characters")


def _audit_error(error: str, mode: AuditRedaction) -> tuple[str, bool]:
    """The `reason` an `execution.failed` event keeps, and whether it was redacted.

    A database error quotes literal values (`Key (email)=(a@b.c) already exists`), so
    unless `[audit].redaction = "none"` the audit log keeps only the error's class, the
    text before the first ':' (`driver error`, `token verification failed`, …); the full
    text stays with the execution and its result, behind result access.
    """
    if mode is AuditRedaction.NONE:
        return error, False
    head, colon, _ = error.partition(":")
    head = head.strip()
    if not colon or not head or len(head) > _MAX_ERROR_CLASS_CHARS:
        return "execution failed", True
    return head, True


def _truncate(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _truncation(body: JobResult) -> tuple[bool, str | None]:
    """Whether the rows were cut, and why: the agent says so inside `result_data`."""
    if not body.truncated or body.result_data is None:
        return bool(body.truncated), None
    try:
        data = json.loads(body.result_data)
    except ValueError:
        return True, None
    reason = data.get("truncation_reason") if isinstance(data, dict) else None
    return True, reason if isinstance(reason, str) else None


def _migration_outcome(result_data: str | None) -> dict[str, Any]:
    """`applied` / `reverted` versions of a successful migration, for the audit event."""
    if not result_data:
        return {}
    try:
        data = json.loads(result_data)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in ("applied", "reverted") if isinstance(data.get(key), list)}
