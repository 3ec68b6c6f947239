"""Request use cases: create, read (with `?wait=`), list, cancel, and result retrieval.

spec/server.md §1.3 (create), §1.8 (results), §2.6 (cancel), §8.2 (endpoints). The create
path is the reference's, in its order, minus what needs approvals (those endpoints come
later; a request that needs approval is stored `pending` with its expiry and first-step
approvers, ready for them). What we do differently (DESIGN.md §4, spec/server.md §11(c)):

* the execution plan is the classifier's *exact source* statements (signed at claim);
* an auto-approved request is dispatched in the same transaction that creates it, and
  keeps where it came from (`pre_dispatch_status`), so a dispatch timeout can return it;
* audit events carry literal-redacted SQL per `[audit].redaction` (the raw text stays in
  `requests.detail` for approvers);
* admins may read requests and results (`request.view:any`, `result.view:any`);
* results are summarised in the store, so a client that reconnects always gets its result,
  and a result stream that times out answers 204 with no body.

Long-polls (`get_waiting`, `result_stream`) are coroutines: they arm a notifier waiter
*before* reading the store, wait on it, and re-read at least every second (replicas on a
shared PostgreSQL do not share notifications). Store access runs in worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from application.server.audit_events import about_request, audit_event
from application.server.ports.result_relay import ResultRelay
from application.server.ports.services import (
    DispatchNotifier,
    ResultContentStore,
    ServerClock,
    SqlClassifier,
    dispatch_topic,
    request_topic,
)
from application.server.ports.work import (
    DryRunJobRecord,
    DuplicateIdempotencyKey,
    ExecutionRecord,
    ExecutionStatus,
    RequestFilters,
    RequestRecord,
    RequestUpdate,
    ResultSummary,
)
from application.server.settings import AuditRedaction, ServerSettings
from domain.server.agent_registry import QueueHint, queue_hint
from domain.server.errors import (
    Conflict,
    Gone,
    NotFound,
    ServiceUnavailable,
    Validation,
)
from domain.server.execution_policies import DeliveryMode
from domain.server.rbac import (
    Ownership,
    Permission,
    Principal,
    RequestMutate,
    RequestView,
    Result,
    Selector,
    authorize,
    authorize_global,
    matched_selectors,
    parse_selector,
)
from domain.server.request_lifecycle import (
    CANCELLABLE_STATUSES,
    RequestStatus,
    Trigger,
    parse_status,
    transition,
)
from domain.server.sql_classification import (
    PARSE_FAILED,
    Classification,
    execution_plan_json,
)
from domain.server.text_limits import utf8_len
from domain.server.workflows import (
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproved,
    AutoApproveMode,
    RiskLevel,
    StepMode,
    Workflow,
    evaluate,
    scope_name_problem,
)
from domain.shared.operations import Operation, UnsupportedOperationError, parse_operation
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreSession

__all__ = [
    "LONG_POLL_RECHECK_SECS",
    "MAX_DETAIL_BYTES",
    "MAX_REASON_BYTES",
    "MAX_STORED_ERROR_BYTES",
    "MAX_WAIT_SECS",
    "RESULT_STREAM_SECS",
    "CreateRequestInput",
    "CreatedRequest",
    "ExecutionHistoryEntry",
    "RequestDetails",
    "RequestList",
    "RequestService",
    "ResultEnvelope",
    "ServerDraining",
    "new_uuid",
    "requester_role",
    "workflow_from_snapshot",
    "workflow_snapshot",
]

#: `detail` limit on create ("query too long (max 100KB)").
MAX_DETAIL_BYTES = 100_000
MAX_REASON_BYTES = 1024
#: `GET /api/requests/{id}?wait=` is capped at this many seconds.
MAX_WAIT_SECS = 120
#: `GET …/result/stream` holds this long, then answers 204.
RESULT_STREAM_SECS = 300
#: Held long-polls re-read the store at least this often (another replica's change).
LONG_POLL_RECHECK_SECS = 1.0
#: Audit `detail_fingerprint` is cut to this many characters.
FINGERPRINT_CHARS = 1024
#: How much of a failure's error message the result summary keeps.
MAX_STORED_ERROR_BYTES = 4096

_SQL_OPERATIONS = frozenset({Operation.EXECUTE_SELECT, Operation.EXECUTE_DML})
_DEFAULT_DIALECT = "postgresql"

_T = TypeVar("_T")


def new_uuid() -> str:
    """A UUID v4 string: request, execution, token and claim ids (agent-protocol.md §14)."""
    return str(uuid.uuid4())


class ServerDraining(ServiceUnavailable):
    """The server is shutting down: new work is refused with `{"error":"server_shutting_down"}`."""

    def __init__(self) -> None:
        super().__init__("server_shutting_down")


# --- workflow snapshots -----------------------------------------------------------------------


def workflow_snapshot(workflow: Workflow) -> str:
    """The matched workflow frozen as JSON in the request row (approvals read it later)."""
    rule = workflow.auto_approve
    data: dict[str, Any] = {
        "id": workflow.id,
        "database": workflow.database,
        "environment": workflow.environment,
        "operations": [op.value for op in workflow.operations],
        "require_reason": workflow.require_reason,
        "allow_self_approve": workflow.allow_self_approve,
        "allow_same_approver_across_steps": workflow.allow_same_approver_across_steps,
        "explain": workflow.explain,
        "pending_ttl_secs": workflow.pending_ttl_secs,
        "approved_ttl_secs": workflow.approved_ttl_secs,
        "statement_timeout_secs": workflow.statement_timeout_secs,
        "auto_approve": None
        if rule is None
        else {
            "mode": rule.mode.value,
            "risk": None if rule.risk is None else rule.risk.value,
            "allow_read_only": rule.allow_read_only,
            "allow_safe_ddl": rule.allow_safe_ddl,
            "max_estimated_rows": rule.max_estimated_rows,
        },
        "steps": [
            {
                "mode": step.mode.value,
                "approvers": [
                    {"selector": str(approver.selector), "min": approver.min}
                    for approver in step.approvers
                ],
            }
            for step in workflow.steps
        ],
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def workflow_from_snapshot(snapshot_json: str | None) -> Workflow | None:
    """The workflow a request was created under, as `workflow_snapshot` froze it."""
    if not snapshot_json:
        return None
    data = json.loads(snapshot_json)
    rule = data.get("auto_approve")
    return Workflow(
        database=data["database"],
        environment=data["environment"],
        operations=tuple(Operation(op) for op in data.get("operations", [])),
        require_reason=bool(data.get("require_reason", False)),
        allow_self_approve=bool(data.get("allow_self_approve", False)),
        allow_same_approver_across_steps=bool(data.get("allow_same_approver_across_steps", False)),
        explain=bool(data.get("explain", True)),
        pending_ttl_secs=data.get("pending_ttl_secs"),
        approved_ttl_secs=data.get("approved_ttl_secs"),
        statement_timeout_secs=data.get("statement_timeout_secs"),
        auto_approve=None
        if rule is None
        else AutoApprove(
            mode=AutoApproveMode(rule["mode"]),
            risk=None if rule.get("risk") is None else RiskLevel(rule["risk"]),
            allow_read_only=bool(rule.get("allow_read_only", True)),
            allow_safe_ddl=bool(rule.get("allow_safe_ddl", True)),
            max_estimated_rows=int(rule.get("max_estimated_rows", 1000)),
        ),
        steps=tuple(
            ApprovalStep(
                mode=StepMode(step.get("mode", "all")),
                approvers=tuple(
                    Approver(parse_selector(a["selector"]), int(a.get("min", 1)))
                    for a in step.get("approvers", [])
                ),
            )
            for step in data.get("steps", [])
        ),
    )


# --- inputs and outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateRequestInput:
    """`POST /api/requests` (the reference's `CreateRequestBody`)."""

    database: str
    environment: str
    detail: str
    operation: str = ""
    reason: str | None = None
    idempotency_key: str | None = None
    metadata: Any = None
    emergency: bool = False
    allow_ddl: bool = False
    no_store: bool = False
    share_with: tuple[str, ...] = ()
    client_ip: str | None = None


@dataclass(frozen=True)
class CreatedRequest:
    """The create response; `idempotent` replays answer 200 instead of 201."""

    id: str
    status: RequestStatus
    operation: Operation
    approvers: tuple[str, ...]
    idempotent: bool
    expires_at: datetime | None

    @property
    def http_status(self) -> int:
        return 200 if self.idempotent else 201


@dataclass(frozen=True)
class RequestDetails:
    """`GET /api/requests/{id}`: the row, why it may wait, and its EXPLAIN context."""

    record: RequestRecord
    queue_hint: QueueHint | None
    approvers: tuple[str, ...]
    dry_runs: tuple[DryRunJobRecord, ...]
    explain_enabled: bool


@dataclass(frozen=True)
class RequestList:
    requests: tuple[RequestRecord, ...]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class ResultEnvelope:
    """What result stream and content return (`_dbward_result: true`)."""

    success: bool
    execution_id: str | None = None
    rows_affected: int | None = None
    truncated: bool = False
    error_message: str | None = None
    #: The agent's `result_data` text as stored; None when there is none (a failure, or
    #: stream-only content that is gone). Kept raw: the API layer parses it once.
    result_data_raw: str | None = None

    @property
    def result_data(self) -> Any:
        """`result_data` parsed as JSON, or the text itself when it is not JSON."""
        if self.result_data_raw is None:
            return None
        try:
            return json.loads(self.result_data_raw)
        except ValueError:
            return self.result_data_raw


@dataclass(frozen=True)
class ExecutionHistoryEntry:
    execution: ExecutionRecord
    has_stored_result: bool


@dataclass
class _Plan:
    """What create decided before the transaction."""

    operation: Operation
    scope: Scope
    dialect: str
    classification: Classification | None
    plan_json: str | None
    workflow: Workflow | None
    share_with: tuple[str, ...] = ()
    metadata_json: str = "{}"
    trace: dict[str, Any] = field(default_factory=dict)


class RequestService:
    """The request use cases. Construct with the store and ports; every method is one use case."""

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        classifier: SqlClassifier,
        notifier: DispatchNotifier,
        result_store: ResultContentStore,
        result_relay: ResultRelay,
        draining: Callable[[], bool] = lambda: False,
        new_id: Callable[[], str] = new_uuid,
        result_stream_secs: float = RESULT_STREAM_SECS,
        recheck_secs: float = LONG_POLL_RECHECK_SECS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._classifier = classifier
        self._notifier = notifier
        self._result_store = result_store
        # The agent protocol fills it; the result use cases read it.
        self._relay = result_relay
        self._draining = draining
        self._new_id = new_id
        self._result_stream_secs = result_stream_secs
        self._recheck_secs = recheck_secs

    # --- create ---------------------------------------------------------------------------

    def create(self, principal: Principal, body: CreateRequestInput) -> CreatedRequest:
        if self._draining():
            raise ServerDraining()
        plan = self._plan(principal, body)
        created = self._persist(principal, body, plan)
        return created

    def _plan(self, principal: Principal, body: CreateRequestInput) -> _Plan:
        # Step 2: names, operation.
        for kind, name in (("database", body.database), ("environment", body.environment)):
            problem = scope_name_problem(kind, name, wildcard=False)
            if problem is not None:
                raise Validation(problem)
        operation = _parse_request_operation(body.operation)
        # Step 3: sizes.
        if utf8_len(body.detail) > MAX_DETAIL_BYTES:
            raise Validation("query too long (max 100KB)")
        if body.reason is not None and utf8_len(body.reason) > MAX_REASON_BYTES:
            raise Validation(f"reason too long (max {MAX_REASON_BYTES} bytes)")
        # Step 4.
        if body.allow_ddl and not body.emergency:
            raise Validation("--allow-ddl requires --emergency")
        scope = Scope(body.database, body.environment)
        # Step 5: the dialect of the last schema snapshot, PostgreSQL by default.
        with self._store.read() as session:
            snapshot = session.work.get_schema_snapshot(scope)
        dialect = snapshot.dialect if snapshot is not None else _DEFAULT_DIALECT
        # Step 6: classify SQL; the classifier's operation wins (fail closed).
        classification: Classification | None = None
        plan_json: str | None = None
        if operation in _SQL_OPERATIONS:
            classification = self._classifier.classify(body.detail, dialect)
            if classification.parse_failed:
                self._audit_blocked(principal, body, operation, dialect)
                raise Validation(f"SQL blocked by review: {PARSE_FAILED}")
            if classification.is_rejected:
                raise Validation(classification.rejected_reason or "SQL rejected")
            operation = classification.operation
            plan_json = execution_plan_json(classification)
        # Step 7: the workflow, looked up early.
        workflow = self._settings.workflow_for(scope.database, scope.environment, operation)
        # Step 9: permission, scoped to (db, env).
        for permission in _create_permissions(operation, classification, body):
            authorize(principal, permission, database=scope.database, environment=scope.environment)
        # Step 10: share_with selectors.
        share_with = tuple(str(parse_selector(text)) for text in body.share_with)
        # Step 11.
        if body.emergency and not (body.reason and body.reason.strip()):
            raise Validation("reason is required for emergency requests")
        if operation is Operation.MIGRATE_REPAIR and not body.emergency:
            raise Validation("migrate_repair requires --emergency")
        # Step 12: registration.
        if not self._settings.is_registered(scope.database, scope.environment):
            known = [
                env
                for registration in self._settings.databases
                if registration.name == scope.database
                for env in registration.environments
            ][:5]
            hint = f" (registered environments: {', '.join(known)})" if known else ""
            raise Validation(
                f"database '{scope.database}' not registered in environment "
                f"'{scope.environment}'{hint}"
            )
        metadata_json = "{}" if body.metadata is None else json.dumps(body.metadata)
        return _Plan(
            operation=operation,
            scope=scope,
            dialect=dialect,
            classification=classification,
            plan_json=plan_json,
            workflow=workflow,
            share_with=share_with,
            metadata_json=metadata_json,
        )

    def _persist(
        self, principal: Principal, body: CreateRequestInput, plan: _Plan
    ) -> CreatedRequest:
        fingerprint = hashlib.sha256(body.detail.encode("utf-8", "surrogatepass")).hexdigest()
        if body.idempotency_key is not None:
            with self._store.read() as session:
                existing = session.work.find_idempotent(principal.subject_id, body.idempotency_key)
            if existing is not None:
                return _replay(existing, fingerprint)
        # Step 14: fail closed without a workflow (break-glass aside).
        workflow = plan.workflow
        if workflow is None and not body.emergency:
            raise Validation(
                f"no workflow configured for {plan.scope.database}/{plan.scope.environment}"
            )
        risk = _risk(plan.operation, workflow)
        decision = None if workflow is None else evaluate(workflow, risk)
        needs_approval = not body.emergency and not isinstance(decision, AutoApproved)
        # Step 15.
        if (
            workflow is not None
            and workflow.require_reason
            and not (body.reason and body.reason.strip())
        ):
            raise Validation("reason is required by workflow policy")
        trigger = Trigger.create(emergency=body.emergency, needs_approval=needs_approval)
        created_status = transition(None, trigger)
        now = self._clock.now()
        request_id = self._new_id()
        approvers = _first_step_selectors(workflow) if needs_approval else ()
        if created_status is RequestStatus.PENDING:
            expires_at: datetime | None = now + timedelta(
                seconds=self._settings.pending_ttl_secs(workflow)
            )
            resolved_at: datetime | None = None
        else:
            # Resolved now: if its dispatch times out it rests here, and expires on time.
            resolved_at = now
            expires_at = now + timedelta(seconds=self._settings.approved_ttl_secs(workflow))
        trace = _decision_trace(plan, workflow, risk, decision, body.emergency, principal)
        record = RequestRecord(
            id=request_id,
            requester=principal.subject_id,
            operation=plan.operation,
            database=plan.scope.database,
            environment=plan.scope.environment,
            detail=body.detail,
            status=created_status,
            created_at=now,
            updated_at=now,
            emergency=body.emergency,
            reason=body.reason,
            idempotency_key=body.idempotency_key,
            idempotency_fingerprint=fingerprint,
            metadata_json=plan.metadata_json,
            share_with=plan.share_with,
            no_store=body.no_store,
            workflow_snapshot_json=None if workflow is None else workflow_snapshot(workflow),
            decision_trace_json=json.dumps(trace, separators=(",", ":"), sort_keys=True),
            execution_plan_json=plan.plan_json,
            resolved_at=resolved_at,
            expires_at=expires_at,
        )
        dry_runs = self._dry_run_jobs(record, plan, workflow, now)
        fingerprint_text, raw_text = self._audit_detail(record.detail, plan.operation, plan.dialect)
        try:
            with self._store.write() as session:
                if body.idempotency_key is not None:
                    existing = session.work.find_idempotent(
                        principal.subject_id, body.idempotency_key
                    )
                    if existing is not None:
                        return _replay(existing, fingerprint)
                session.work.ensure_database(plan.scope, now)
                session.work.insert_request(record)
                if approvers:
                    session.work.replace_pending_approvers(record.id, 0, approvers)
                create_event = {
                    RequestStatus.PENDING: "request.created",
                    RequestStatus.AUTO_APPROVED: "request.auto_approved",
                    RequestStatus.BREAK_GLASS: "request.break_glass",
                }[created_status]
                self._append(
                    session,
                    now,
                    create_event,
                    "request" if created_status is RequestStatus.PENDING else "approval",
                    principal,
                    record,
                    detail_fingerprint=fingerprint_text,
                    detail_raw=raw_text,
                    reason=body.reason,
                    client_ip=body.client_ip,
                    metadata={"decision": trace["decision"]["outcome"]},
                )
                final_status = created_status
                if created_status is not RequestStatus.PENDING:
                    final_status = transition(created_status, Trigger.DISPATCH)
                    if not session.work.update_request_status(
                        record.id,
                        allowed_from={created_status},
                        to=final_status,
                        now=now,
                        changes=RequestUpdate(pre_dispatch_status=created_status),
                    ):
                        raise Conflict("concurrent status change")
                    self._append(
                        session,
                        now,
                        "request.dispatched",
                        "approval",
                        principal,
                        record,
                        client_ip=body.client_ip,
                        metadata={"from": created_status.value},
                    )
                for job in dry_runs:
                    session.work.insert_dry_run_job(job)
        except DuplicateIdempotencyKey:
            assert body.idempotency_key is not None
            with self._store.read() as session:
                existing = session.work.find_idempotent(principal.subject_id, body.idempotency_key)
            if existing is None:  # pragma: no cover - the row that beat us is committed
                raise Conflict("concurrent request with the same idempotency key") from None
            return _replay(existing, fingerprint)
        self._notifier.notify(request_topic(record.id))
        if final_status is RequestStatus.DISPATCHED or dry_runs:
            self._notifier.notify(dispatch_topic(plan.scope))
        return CreatedRequest(
            id=record.id,
            status=final_status,
            operation=record.operation,
            approvers=approvers,
            idempotent=False,
            expires_at=expires_at if final_status is RequestStatus.PENDING else None,
        )

    def _dry_run_jobs(
        self, record: RequestRecord, plan: _Plan, workflow: Workflow | None, now: datetime
    ) -> list[DryRunJobRecord]:
        explain = workflow.explain if workflow is not None else True
        if not explain or record.no_store or plan.classification is None:
            return []
        statements = [s for s in plan.classification.statements if not s.is_safe_set]
        # One microsecond apart: the jobs keep the statements' order (the table has no
        # position column, and rows are read back ordered by creation).
        return [
            DryRunJobRecord(
                id=self._new_id(),
                request_id=record.id,
                database=record.database,
                environment=record.environment,
                sql=statement.text,
                created_at=now + timedelta(microseconds=position),
            )
            for position, statement in enumerate(statements)
        ]

    def _audit_detail(
        self, detail: str, operation: Operation, dialect: str
    ) -> tuple[str | None, str | None]:
        """(`detail_fingerprint`, `detail_raw`) for an audit event, per `[audit].redaction`."""
        if operation in _SQL_OPERATIONS:
            redacted = self._classifier.redact(detail, dialect)
        else:
            redacted = _migration_summary(operation, detail)
        fingerprint = redacted[:FINGERPRINT_CHARS]
        mode = self._settings.audit.redaction
        if mode is AuditRedaction.NONE:
            return fingerprint, detail
        if mode is AuditRedaction.FULL:
            return fingerprint, None
        return fingerprint, redacted

    def _audit_blocked(
        self, principal: Principal, body: CreateRequestInput, operation: Operation, dialect: str
    ) -> None:
        """`request.blocked_by_review`, committed on its own: the 400 must leave a trace."""
        fingerprint, _ = self._audit_detail(body.detail, operation, dialect)
        now = self._clock.now()
        with self._store.write() as session:
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="request.blocked_by_review",
                    category="request",
                    actor=principal,
                    operation=operation.value,
                    database=body.database,
                    environment=body.environment,
                    detail_fingerprint=fingerprint,
                    reason=PARSE_FAILED,
                    metadata={"blocked_rules": ["parse_failure"]},
                    client_ip=body.client_ip,
                )
            )

    def _append(
        self,
        session: StoreSession,
        now: datetime,
        event_type: str,
        category: str,
        principal: Principal | None,
        record: RequestRecord,
        *,
        detail_fingerprint: str | None = None,
        detail_raw: str | None = None,
        reason: str | None = None,
        client_ip: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        session.audit.append(
            audit_event(
                new_id=self._new_id,
                now=now,
                event_type=event_type,
                category=category,
                actor=principal,
                detail_fingerprint=detail_fingerprint,
                detail_raw=detail_raw,
                reason=reason,
                metadata=metadata,
                client_ip=client_ip,
                **about_request(record),
            )
        )

    # --- read -----------------------------------------------------------------------------

    def get(self, principal: Principal, request_id: str) -> RequestDetails:
        now = self._clock.now()
        with self._store.read() as session:
            record = self._visible(session, principal, request_id)
            hint: QueueHint | None = None
            if record.status is RequestStatus.DISPATCHED:
                agents = [row.record for row in session.work.list_agents()]
                hint = queue_hint(agents, record.scope, now)
            dry_runs = tuple(session.work.dry_run_jobs_for_request(record.id))
        workflow = workflow_from_snapshot(record.workflow_snapshot_json)
        return RequestDetails(
            record=record,
            queue_hint=hint,
            approvers=_first_step_selectors(workflow)
            if record.status is RequestStatus.PENDING
            else (),
            dry_runs=dry_runs,
            explain_enabled=bool(dry_runs) or (workflow is not None and workflow.explain),
        )

    async def get_waiting(
        self, principal: Principal, request_id: str, wait_secs: float
    ) -> RequestDetails:
        """`?wait=N`: answer when the status changes, or after N seconds (≤ 120)."""
        wait = min(max(wait_secs, 0.0), MAX_WAIT_SECS)
        if wait <= 0:
            return await asyncio.to_thread(self.get, principal, request_id)
        with self._notifier.arm([request_topic(request_id)]) as waiter:
            details = await asyncio.to_thread(self.get, principal, request_id)
            initial = details.record.status
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while (remaining := deadline - loop.time()) > 0 and not self._draining():
                await waiter.wait(min(self._recheck_secs, remaining))
                details = await asyncio.to_thread(self.get, principal, request_id)
                if details.record.status is not initial:
                    break
        return details

    def list(
        self,
        principal: Principal,
        *,
        limit: int = 50,
        offset: int = 0,
        status: str | None = None,
        user: str | None = None,
    ) -> RequestList:
        """Everyone's requests with `request.view:any`, else the caller's own.

        Requests the caller may see as an approver (pending or past) join this list with
        the approval endpoints.
        """
        ownership = authorize_global(principal, Permission.REQUEST_VIEW)
        limit = min(max(limit, 1), 100)
        offset = max(offset, 0)
        wanted_status: RequestStatus | None = None
        if status is not None:
            try:
                wanted_status = parse_status(status)
            except ValueError:
                raise Validation(f"unknown status: {status}") from None
        if ownership is Ownership.ANY:
            requester = user
        else:
            if user is not None and user != principal.subject_id:
                return RequestList((), 0, limit, offset)
            requester = principal.subject_id
        with self._store.read() as session:
            rows, total = session.work.list_requests(
                RequestFilters(requester=requester, status=wanted_status),
                limit=limit,
                offset=offset,
            )
        return RequestList(tuple(rows), total, limit, offset)

    def executions(
        self, principal: Principal, request_id: str, limit: int = 20
    ) -> tuple[ExecutionHistoryEntry, ...]:
        limit = min(max(limit, 1), 100)
        with self._store.read() as session:
            record = self._visible(session, principal, request_id)
            rows = session.work.list_executions(record.id, limit)
            stored = session.work.executions_with_results([row.id for row in rows])
        return tuple(ExecutionHistoryEntry(row, row.id in stored) for row in rows)

    def _visible(
        self, session: StoreSession, principal: Principal, request_id: str
    ) -> RequestRecord:
        record = session.work.get_request(request_id)
        if record is None:
            raise NotFound("request not found")
        workflow = workflow_from_snapshot(record.workflow_snapshot_json)
        pending_approver = record.status is RequestStatus.PENDING and bool(
            matched_selectors(principal, _first_step(workflow), record.requester)
        )
        authorize(
            principal,
            Permission.REQUEST_VIEW,
            RequestView(requester=record.requester, is_pending_approver=pending_approver),
            database=record.database,
            environment=record.environment,
        )
        return record

    # --- cancel ---------------------------------------------------------------------------

    def cancel(
        self, principal: Principal, request_id: str, reason: str | None = None
    ) -> tuple[str, RequestStatus]:
        if reason is not None and utf8_len(reason) > MAX_REASON_BYTES:
            raise Validation(f"reason too long (max {MAX_REASON_BYTES} bytes)")
        now = self._clock.now()
        with self._store.write() as session:
            record = session.work.get_request(request_id)
            if record is None:
                raise NotFound("request not found")
            authorize(
                principal,
                Permission.REQUEST_CANCEL,
                RequestMutate(requester=record.requester),
                database=record.database,
                environment=record.environment,
            )
            if principal.subject_id != record.requester and not (reason and reason.strip()):
                raise Validation("reason required for non-owner cancel")
            target = transition(record.status, Trigger.CANCEL)
            if not session.work.update_request_status(
                record.id,
                allowed_from=CANCELLABLE_STATUSES,
                to=target,
                now=now,
                changes=RequestUpdate(
                    resolved_at=now, cancelled_by=principal.subject_id, cancel_reason=reason
                ),
            ):
                raise Conflict("concurrent status change")
            self._append(
                session,
                now,
                "request.cancelled",
                "approval",
                principal,
                record,
                reason=reason,
                metadata={"from": record.status.value},
            )
        self._notifier.notify(request_topic(record.id))
        return record.id, target

    # --- results --------------------------------------------------------------------------

    async def result_stream(self, principal: Principal, request_id: str) -> ResultEnvelope | None:
        """The result once the request is done; None (→ 204) after `RESULT_STREAM_SECS`."""
        return await self._hold(
            lambda: asyncio.to_thread(self._final_result, principal, request_id),
            [request_topic(request_id)],
            self._result_stream_secs,
        )

    async def _hold(
        self,
        check: Callable[[], Awaitable[_T | None]],
        topics: Sequence[str],
        wait_secs: float,
    ) -> _T | None:
        with self._notifier.arm(topics) as waiter:
            outcome = await check()
            if outcome is not None:
                return outcome
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_secs
            # A draining server lets its long-polls go (204): clients come back elsewhere.
            while (remaining := deadline - loop.time()) > 0 and not self._draining():
                await waiter.wait(min(self._recheck_secs, remaining))
                outcome = await check()
                if outcome is not None:
                    return outcome
        return None

    def _final_result(self, principal: Principal, request_id: str) -> ResultEnvelope | None:
        with self._store.read() as session:
            record = self._result_visible(session, principal, request_id)
            if record.status in (
                RequestStatus.REJECTED,
                RequestStatus.CANCELLED,
                RequestStatus.EXPIRED,
            ):
                return ResultEnvelope(success=False, error_message=f"request {record.status}")
            if record.status not in (RequestStatus.EXECUTED, RequestStatus.FAILED):
                return None
            summary = session.work.latest_result(record.id)
        if summary is None:
            return ResultEnvelope(
                success=record.status is RequestStatus.EXECUTED,
                error_message=None
                if record.status is RequestStatus.EXECUTED
                else "no result was recorded",
            )
        return self._envelope(summary)

    def result_content(
        self, principal: Principal, request_id: str, execution_id: str | None = None
    ) -> ResultEnvelope:
        now = self._clock.now()
        with self._store.read() as session:
            record = self._result_visible(session, principal, request_id)
            if record.status not in (
                RequestStatus.EXECUTED,
                RequestStatus.FAILED,
                RequestStatus.EXECUTION_LOST,
            ):
                raise NotFound(f"no result: the request is {record.status}")
            if execution_id is not None:
                execution = session.work.get_execution(execution_id)
                if execution is None or execution.request_id != record.id:
                    raise NotFound("execution not found")
                if execution.status is ExecutionStatus.CLAIMED:
                    raise Conflict("the execution is still running")
                summary = session.work.result_for_execution(execution_id)
            else:
                summary = session.work.latest_result(record.id)
        if summary is None:
            raise NotFound("no result was recorded for this request")
        if not summary.has_stored_content and summary.success:
            if record.no_store:
                raise Gone("the results of this request are not stored")
            policy = self._settings.result_policy_for(record.database, record.environment)
            if (
                policy.delivery_mode is DeliveryMode.STREAM
                and self._relay.get(summary.execution_id) is None
            ):
                raise Gone("this result was delivered by stream only and is not stored")
        if summary.expires_at is not None and summary.expires_at < now:
            raise Gone("the stored result has expired")
        return self._envelope(summary, require_content=True)

    def _envelope(self, summary: ResultSummary, *, require_content: bool = False) -> ResultEnvelope:
        raw: str | None = None
        if summary.has_stored_content:
            content = self._result_store.get(summary.storage_key)
            if content is None and require_content:
                raise Gone("the stored result is no longer available")
            raw = None if content is None else content.decode("utf-8", "replace")
        else:
            raw = self._relay.get(summary.execution_id)
        return ResultEnvelope(
            success=summary.success,
            execution_id=summary.execution_id,
            rows_affected=summary.rows_affected,
            truncated=summary.truncated,
            error_message=summary.error_message,
            result_data_raw=raw,
        )

    def _result_visible(
        self, session: StoreSession, principal: Principal, request_id: str
    ) -> RequestRecord:
        record = session.work.get_request(request_id)
        if record is None:
            raise NotFound("request not found")
        policy = self._settings.result_policy_for(record.database, record.environment)
        selectors: list[Selector] = [parse_selector(text) for text in record.share_with]
        selectors.extend(policy.access)
        authorize(
            principal,
            Permission.RESULT_VIEW,
            Result(requester=record.requester, access_selectors=tuple(selectors)),
            database=record.database,
            environment=record.environment,
        )
        return record


# --- helpers ----------------------------------------------------------------------------------


def _parse_request_operation(name: str) -> Operation:
    if not name:
        return Operation.EXECUTE_SELECT
    try:
        return parse_operation(name)
    except UnsupportedOperationError as exc:
        raise Validation(str(exc)) from None


def _create_permissions(
    operation: Operation, classification: Classification | None, body: CreateRequestInput
) -> list[Permission]:
    """Step 9: what the requester needs for this operation (§1.3)."""
    if body.emergency:
        wanted = [
            Permission.REQUEST_BREAK_GLASS_QUERY
            if operation is Operation.EXECUTE_SELECT
            else Permission.REQUEST_BREAK_GLASS_DML
        ]
        if body.allow_ddl:
            wanted.append(Permission.REQUEST_BREAK_GLASS_DDL)
        return wanted
    if operation is Operation.EXECUTE_SELECT:
        return [Permission.REQUEST_QUERY]
    if classification is not None and classification.is_ddl_only:
        return [Permission.REQUEST_DDL]
    wanted = [Permission.REQUEST_DML]
    if classification is not None and classification.contains_ddl:
        wanted.append(Permission.REQUEST_DDL)
    return wanted


def _risk(operation: Operation, workflow: Workflow | None) -> RiskLevel | None:
    """§5.6 as far as it goes without SQL review and schema snapshots.

    A read-only query scores low when the workflow allows read-only auto-approval; anything
    else is unknown (which never auto-approves under `risk_based`); migrations are not
    assessed. `always` does not look at risk at all.
    """
    if operation.is_migration:
        return None
    rule = workflow.auto_approve if workflow is not None else None
    if operation is Operation.EXECUTE_SELECT and rule is not None and rule.allow_read_only:
        return RiskLevel.LOW
    return RiskLevel.UNKNOWN


def _first_step(workflow: Workflow | None) -> tuple[Selector, ...]:
    if workflow is None or not workflow.steps:
        return ()
    return workflow.steps[0].selectors


def _first_step_selectors(workflow: Workflow | None) -> tuple[str, ...]:
    return tuple(str(selector) for selector in _first_step(workflow))


def _decision_trace(
    plan: _Plan,
    workflow: Workflow | None,
    risk: RiskLevel | None,
    decision: object,
    emergency: bool,
    principal: Principal,
) -> dict[str, Any]:
    """`decision_trace_json` v1 (§1.3), plus the requester role the execution token names."""
    if emergency:
        outcome, reasons = "auto_approved", ["break_glass"]
    elif isinstance(decision, AutoApproved):
        outcome, reasons = "auto_approved", [decision.reason.value]
    else:
        reason = getattr(decision, "reason", None)
        outcome, reasons = "needs_approval", [reason.value] if reason is not None else []
    rule = workflow.auto_approve if workflow is not None else None
    return {
        "version": 1,
        "classification": {"resolved_operation": plan.operation.value},
        "sql_review": {
            "policy_id": None,
            "findings_count": 0,
            "parse_failed": False,
        },
        "risk": {
            "level": None if risk is None else risk.value,
            "factors": ["read_only"] if risk is RiskLevel.LOW else [],
            "schema_status": "not_synced",
        },
        "workflow": {
            "matched": None
            if workflow is None
            else {
                "id": workflow.id,
                "database": workflow.database,
                "environment": workflow.environment,
                "step_count": len(workflow.steps),
            }
        },
        "decision": {
            "outcome": outcome,
            "reasons": reasons,
            "auto_approve_threshold": None
            if rule is None or rule.risk is None
            else rule.risk.value,
        },
        "requester_role": principal.roles[0].name if principal.roles else "unknown",
    }


def requester_role(record: RequestRecord) -> str:
    """The requester's first role when the request was created (signed into the token)."""
    if record.decision_trace_json:
        try:
            role = json.loads(record.decision_trace_json).get("requester_role")
        except ValueError:
            role = None
        if isinstance(role, str) and role:
            return role
    return "unknown"


def _replay(existing: RequestRecord, fingerprint: str) -> CreatedRequest:
    """Step 13: the same key again → the first request (200); another detail → 409."""
    if existing.idempotency_fingerprint != fingerprint:
        raise Conflict("idempotency key conflict")
    pending = existing.status is RequestStatus.PENDING
    workflow = workflow_from_snapshot(existing.workflow_snapshot_json)
    return CreatedRequest(
        id=existing.id,
        status=existing.status,
        operation=existing.operation,
        approvers=_first_step_selectors(workflow) if pending else (),
        idempotent=True,
        expires_at=existing.expires_at if pending else None,
    )


def _migration_summary(operation: Operation, detail: str) -> str:
    """Migrations in audit events: what runs, without the SQL (`migrate_up: versions=[…]`)."""
    try:
        data = json.loads(detail) if detail else {}
    except ValueError:
        return f"{operation.value}: <unparseable detail>"
    if not isinstance(data, dict):
        return f"{operation.value}: <unparseable detail>"
    if operation is Operation.MIGRATE_REPAIR:
        return f"{operation.value}: action={data.get('action')} version={data.get('version')}"
    versions = data.get("versions")
    if isinstance(versions, list):
        return f"{operation.value}: versions=[{','.join(str(v) for v in versions)}]"
    return operation.value
