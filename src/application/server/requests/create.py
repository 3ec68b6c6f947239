"""Creating a request (`POST /api/requests`): checks, classification, workflow, dispatch.

docs/server.md §1.3. The create path is dbward 0.2's, in its order (the step numbers
below are its steps), minus what needs approvals (those endpoints come later; a request
that needs approval is stored `pending` with its expiry and first-step approvers, ready
for them). What we do differently (docs/server.md §7.1, docs/server.md §11):

* the SQL is judged once (`JudgeSql`: classification, `[[sql_review]]`, risk from the
  schema snapshot, the workflow's decision) in one pass; a break-glass
  `allow_ddl` bypass is audited as `ddl.break_glass_bypass` in the create transaction
  (docs/sql-safety.md §6);
* the execution plan is the classifier's *exact source* statements (signed at claim);
* an auto-approved request is dispatched in the same transaction that creates it, and
  keeps where it came from (`pre_dispatch_status`), so a dispatch timeout can return it;
* audit events carry literal-redacted SQL per `[audit].redaction` (the raw text stays in
  `requests.detail` for approvers);
* EXPLAIN dry-run jobs, one per statement, are queued with the request, so approvers see
  plans as soon as an agent has run them.

An idempotency key makes a retried create safe: the same key and detail answer the
first request again (200), the same key with another detail is a conflict (409). A replay
of an auto-approved request stranded by a dispatch timeout dispatches it again rather than
answering a status that looks live (`CreateRequest._replay`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from application.log_context import bind_ids, scoped_ids
from application.server.audit_events import about_request, audit_event
from application.server.ports.metrics import NO_METRICS, ServerMetrics
from application.server.ports.services import (
    DispatchNotifier,
    ServerClock,
    SqlClassifier,
    dispatch_topic,
    request_topic,
)
from application.server.ports.work.explain_jobs import DryRunJobRecord
from application.server.ports.work.requests import (
    DuplicateIdempotencyKey,
    RequestRecord,
)
from application.server.requests.audit_detail import audit_detail
from application.server.requests.common import (
    MAX_REASON_BYTES,
    ServerDraining,
    first_step_approvers,
    new_uuid,
)
from application.server.requests.decision_trace import DdlBypass, decision_trace
from application.server.requests.dispatch import dispatch_resting, notify_dispatched
from application.server.requests.judgement import Judgement, JudgeSql
from application.server.requests.snapshots import workflow_from_snapshot, workflow_snapshot
from application.server.settings import ServerSettings
from domain.server.audit import AuditEvent
from domain.server.channels import refuse_unoffered_create
from domain.server.errors import Conflict, Validation
from domain.server.rbac import Principal, authorize, parse_selector
from domain.server.request_lifecycle import RequestStatus, Trigger, transition
from domain.server.request_permissions import permissions_to_create
from domain.server.sql_classification import (
    PARSE_FAILED,
    Classification,
    execution_plan_json,
)
from domain.server.text_limits import utf8_len
from domain.server.workflows import AutoApproved, Workflow, scope_name_problem
from domain.shared.migration_files import MigrationDetailError, validate_migration_detail
from domain.shared.operations import Operation, UnsupportedOperationError, parse_operation
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["MAX_DETAIL_BYTES", "CreateRequest", "CreateRequestInput", "CreatedRequest"]

log = logging.getLogger("dbward.server.requests")

#: `detail` limit on create ("query too long (max 100KB)").
MAX_DETAIL_BYTES = 100_000
#: `blocked_rules` of a denied break-glass override of a classifier rejection.
_CLASSIFIER_REJECTION = "classifier_rejection"

#: Where an auto-dispatched request rests after its dispatch timed out (docs/server.md §1.4).
_STRANDED_AFTER_DISPATCH_TIMEOUT = frozenset(
    {RequestStatus.AUTO_APPROVED, RequestStatus.BREAK_GLASS}
)

#: The audit event that records each way a request can be created.
_CREATE_EVENTS = {
    RequestStatus.PENDING: "request.created",
    RequestStatus.AUTO_APPROVED: "request.auto_approved",
    RequestStatus.BREAK_GLASS: "request.break_glass",
}


#: The longest SQL text whose request is created as short store work (`is_long_work`).
SHORT_SQL_CHARS = 4096


@dataclass(frozen=True)
class CreateRequestInput:
    """`POST /api/requests` (dbward 0.2's `CreateRequestBody`)."""

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
class _Plan:
    """What create decided before it writes anything (steps 2 to 12)."""

    judgement: Judgement
    plan_json: str | None
    bypass: DdlBypass | None
    share_with: tuple[str, ...]
    metadata_json: str

    @property
    def operation(self) -> Operation:
        return self.judgement.operation

    @property
    def scope(self) -> Scope:
        return self.judgement.scope

    @property
    def dialect(self) -> str:
        return self.judgement.dialect

    @property
    def classification(self) -> Classification | None:
        return self.judgement.classification


class CreateRequest:
    """Creates a request: refused, stored `pending` for approval, or dispatched at once."""

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        classifier: SqlClassifier,
        notifier: DispatchNotifier,
        draining: Callable[[], bool] = lambda: False,
        new_id: Callable[[], str] = new_uuid,
        metrics: ServerMetrics = NO_METRICS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._classifier = classifier
        self._judge = JudgeSql(store=store, settings=settings, classifier=classifier)
        self._notifier = notifier
        self._draining = draining
        self._new_id = new_id
        self._metrics = metrics

    @staticmethod
    def is_long_work(body: CreateRequestInput) -> bool:
        """Whether creating `body` may take long (`StoreCalls.long`): its SQL is parsed
        twice (classification, redaction for the audit log), quick for a statement of a
        few lines, not for a long migration script."""
        return len(body.detail) > SHORT_SQL_CHARS

    @scoped_ids
    def create(self, principal: Principal, body: CreateRequestInput) -> CreatedRequest:
        if self._draining():
            raise ServerDraining()
        plan = self._plan(principal, body)
        return self._persist(principal, body, plan)

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
        refuse_unoffered_create(
            principal.channel, emergency=body.emergency, allow_ddl=body.allow_ddl
        )
        scope = Scope(body.database, body.environment)
        # Steps 5 to 8 in one judgement (`JudgeSql`): the snapshot's dialect,
        # the classification (its operation wins: fail closed), the workflow, the review
        # and the risk. What it refuses is refused here, in the order of the steps.
        judgement = self._judge.judge(scope, operation, body.detail)
        operation = judgement.operation
        classification = judgement.classification
        plan_json: str | None = None
        bypass: DdlBypass | None = None
        if classification is not None:
            bypass = self._refuse_unsafe_sql(principal, body, judgement)
            plan_json = execution_plan_json(classification)
        else:
            # Migrations: format, versions and dir_sha256 (docs/migrations.md §3).
            try:
                validate_migration_detail(operation.value, body.detail)
            except MigrationDetailError as exc:
                raise Validation(f"invalid migration detail: {exc}") from None
        # Step 9: permission, scoped to (db, env).
        wanted = permissions_to_create(
            operation, classification, emergency=body.emergency, allow_ddl=body.allow_ddl
        )
        for permission in wanted:
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
            raise Validation(self._not_registered(scope))
        return _Plan(
            judgement=judgement,
            plan_json=plan_json,
            bypass=bypass,
            share_with=share_with,
            metadata_json="{}" if body.metadata is None else json.dumps(body.metadata),
        )

    def _refuse_unsafe_sql(
        self, principal: Principal, body: CreateRequestInput, judgement: Judgement
    ) -> DdlBypass | None:
        """Steps 6 and 8: a rejected text, a parse failure or a review block is a 400.

        A break-glass request with `allow_ddl` passes a rejection when every statement is
        DDL (or DDL refused only for its object kind), and blocking findings when all of
        them come from schema-change rules (docs/sql-safety.md §6); what it passed is
        returned, for the audit event `ddl.break_glass_bypass`. A refused override is
        audited like any other review block, marked `break_glass_attempted`.
        """
        classification = judgement.classification
        assert classification is not None
        break_glass_ddl = body.emergency and body.allow_ddl
        classifier_bypassed = False
        if classification.is_rejected:
            reason = classification.rejected_reason or "SQL rejected"
            if not (break_glass_ddl and classification.break_glass_ddl_only):
                if break_glass_ddl:
                    self._audit_blocked(
                        principal, body, judgement, reason, [_CLASSIFIER_REJECTION], True
                    )
                raise Validation(reason)
            classifier_bypassed = True
        if classification.parse_failed:
            self._audit_blocked(principal, body, judgement, PARSE_FAILED, ["parse_failure"], False)
            raise Validation(f"SQL blocked by review: {PARSE_FAILED}")
        review = judgement.review
        reviewer_bypassed = False
        if review is not None and review.blocked:
            if break_glass_ddl and not review.blocked_under_allow_ddl():
                reviewer_bypassed = True
            else:
                message = review.block_message()
                rules = list(dict.fromkeys(f.rule.value for f in review.blocking))
                self._audit_blocked(principal, body, judgement, message, rules, break_glass_ddl)
                raise Validation(message)
        if classifier_bypassed or reviewer_bypassed:
            return DdlBypass(classifier_bypassed, reviewer_bypassed)
        return None

    def _not_registered(self, scope: Scope) -> str:
        """The refusal for an unregistered scope, naming a few environments that exist."""
        known = [
            env
            for registration in self._settings.databases
            if registration.name == scope.database
            for env in registration.environments
        ][:5]
        hint = f" (registered environments: {', '.join(known)})" if known else ""
        return (
            f"database '{scope.database}' not registered in environment '{scope.environment}'{hint}"
        )

    def _persist(
        self, principal: Principal, body: CreateRequestInput, plan: _Plan
    ) -> CreatedRequest:
        fingerprint = hashlib.sha256(body.detail.encode("utf-8", "surrogatepass")).hexdigest()
        # Step 13: a replay answers before anything else is decided again.
        if body.idempotency_key is not None:
            existing = self._find_idempotent(principal, body.idempotency_key)
            if existing is not None:
                return self._replay(principal, existing, fingerprint)
        # Step 14: fail closed without a workflow (break-glass aside).
        workflow = plan.judgement.workflow
        if workflow is None and not body.emergency:
            raise Validation(
                f"no workflow configured for {plan.scope.database}/{plan.scope.environment}"
            )
        decision = plan.judgement.decision
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
        # Resolved at creation: dispatched in the same transaction, so the row is written
        # dispatched at once (the audit log still records both steps).
        final_status = (
            created_status
            if created_status is RequestStatus.PENDING
            else transition(created_status, Trigger.DISPATCH)
        )
        now = self._clock.now()
        request_id = self._new_id()
        bind_ids(request_id=request_id)
        approvers = first_step_approvers(workflow) if needs_approval else ()
        if created_status is RequestStatus.PENDING:
            expires_at: datetime | None = now + timedelta(
                seconds=self._settings.pending_ttl_secs(workflow)
            )
            resolved_at: datetime | None = None
        else:
            # Resolved now: if its dispatch times out it rests here, and expires on time.
            resolved_at = now
            expires_at = now + timedelta(seconds=self._settings.approved_ttl_secs(workflow))
        trace = decision_trace(
            judgement=plan.judgement,
            emergency=body.emergency,
            principal=principal,
            bypass=plan.bypass,
        )
        record = RequestRecord(
            id=request_id,
            requester=principal.subject_id,
            operation=plan.operation,
            database=plan.scope.database,
            environment=plan.scope.environment,
            detail=body.detail,
            status=final_status,
            pre_dispatch_status=None if final_status is created_status else created_status,
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
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type=_CREATE_EVENTS[created_status],
                        category="request"
                        if created_status is RequestStatus.PENDING
                        else "approval",
                        actor=principal,
                        detail_fingerprint=fingerprint_text,
                        detail_raw=raw_text,
                        reason=body.reason,
                        metadata={"decision": trace["decision"]["outcome"]},
                        client_ip=body.client_ip,
                        **about_request(record),
                    )
                )
                if plan.bypass is not None:
                    # In the create transaction: no bypass runs without its trace.
                    session.audit.append(
                        self._bypass_event(principal, body, record, plan, now, raw_text)
                    )
                if final_status is not created_status:
                    session.audit.append(
                        audit_event(
                            new_id=self._new_id,
                            now=now,
                            event_type="request.dispatched",
                            category="approval",
                            actor=principal,
                            metadata={"from": created_status.value},
                            client_ip=body.client_ip,
                            **about_request(record),
                        )
                    )
                for job in dry_runs:
                    session.work.insert_dry_run_job(job)
        except DuplicateIdempotencyKey:
            # Another create with this key committed between our check and our insert.
            assert body.idempotency_key is not None
            existing = self._find_idempotent(principal, body.idempotency_key)
            if existing is None:  # pragma: no cover - the row that beat us is committed
                raise Conflict("concurrent request with the same idempotency key") from None
            return _replay(existing, fingerprint)
        self._notifier.notify(request_topic(record.id))
        if final_status is RequestStatus.DISPATCHED:
            # Named, so a poll held here claims it without looking for it (poll.py); its
            # dry runs, if any, go to the agent's next poll.
            self._notifier.notify(dispatch_topic(plan.scope), record)
        elif dry_runs:
            self._notifier.notify(dispatch_topic(plan.scope))
        self._metrics.request_created(final_status, record.operation)
        log.info("request created: %s, %s", record.operation.value, final_status.value)
        return CreatedRequest(
            id=record.id,
            status=final_status,
            operation=record.operation,
            approvers=approvers,
            idempotent=False,
            expires_at=expires_at if final_status is RequestStatus.PENDING else None,
        )

    def _replay(
        self, principal: Principal, existing: RequestRecord, fingerprint: str
    ) -> CreatedRequest:
        """Step 13, ours: a replay never passes a stranded request off as live.

        An auto-approved or emergency request rests in `auto_approved` / `break_glass` only
        after its dispatch timed out (no agent claimed it). Its create promised "dispatched
        at once", and the retry asks for the same thing again, so the replay dispatches it
        again (as its owner's resume would, under the same TTL and execution policy; audit
        `request.dispatched` with `"via": "idempotent_replay"`) and answers `dispatched`.
        Every other status is answered as it is: a replay never re-runs a request that
        ran, never resumes an approved or lost one, and never skips an approval.
        """
        if existing.idempotency_fingerprint != fingerprint:
            raise Conflict("idempotency key conflict")
        if existing.status in _STRANDED_AFTER_DISPATCH_TIMEOUT:
            existing = self._redispatch_stranded(principal, existing)
        return _replay(existing, fingerprint)

    def _redispatch_stranded(self, principal: Principal, stranded: RequestRecord) -> RequestRecord:
        now = self._clock.now()
        with self._store.write() as session:
            record = session.work.get_request(stranded.id)
            if record is None or record.status not in _STRANDED_AFTER_DISPATCH_TIMEOUT:
                return record or stranded  # moved meanwhile (resumed, cancelled): say so
            dispatch_resting(
                session,
                record,
                settings=self._settings,
                actor=principal,
                now=now,
                new_id=self._new_id,
                via="idempotent_replay",
            )
            fresh = session.work.get_request(record.id)
        notify_dispatched(self._notifier, record)
        return fresh or record

    def _find_idempotent(self, principal: Principal, key: str) -> RequestRecord | None:
        with self._store.read() as session:
            return session.work.find_idempotent(principal.subject_id, key)

    def _dry_run_jobs(
        self, record: RequestRecord, plan: _Plan, workflow: Workflow | None, now: datetime
    ) -> list[DryRunJobRecord]:
        """One EXPLAIN job per statement, unless the workflow turns EXPLAIN off or the
        request keeps nothing (`no_store`); a safe session `SET` has no plan to show."""
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
    ) -> tuple[str, str | None]:
        return audit_detail(
            detail,
            operation,
            dialect,
            classifier=self._classifier,
            redaction=self._settings.audit.redaction,
        )

    def _bypass_event(
        self,
        principal: Principal,
        body: CreateRequestInput,
        record: RequestRecord,
        plan: _Plan,
        now: datetime,
        sql_redacted: str | None,
    ) -> AuditEvent:
        """`ddl.break_glass_bypass`: what an `allow_ddl` request let through, and why.

        `sql_redacted` follows `[audit].redaction` like every event's SQL (none under
        `full`)."""
        assert plan.bypass is not None and plan.classification is not None
        return audit_event(
            new_id=self._new_id,
            now=now,
            event_type="ddl.break_glass_bypass",
            category="approval",
            actor=principal,
            reason=body.reason,
            metadata={
                "request_id": record.id,
                "statement_count": plan.classification.statement_count,
                "reason": body.reason,
                "classifier_bypassed": plan.bypass.classifier_bypassed,
                "reviewer_bypassed": plan.bypass.reviewer_bypassed,
                "sql_redacted": sql_redacted,
            },
            client_ip=body.client_ip,
            **about_request(record),
        )

    def _audit_blocked(
        self,
        principal: Principal,
        body: CreateRequestInput,
        judgement: Judgement,
        reason: str,
        blocked_rules: list[str],
        break_glass_attempted: bool,
    ) -> None:
        """`request.blocked_by_review`, committed on its own: the 400 must leave a trace."""
        fingerprint, _ = self._audit_detail(body.detail, judgement.operation, judgement.dialect)
        metadata: dict[str, object] = {"blocked_rules": blocked_rules}
        if break_glass_attempted:
            metadata["break_glass_attempted"] = True
        now = self._clock.now()
        with self._store.write() as session:
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="request.blocked_by_review",
                    category="request",
                    actor=principal,
                    operation=judgement.operation.value,
                    database=body.database,
                    environment=body.environment,
                    detail_fingerprint=fingerprint,
                    reason=reason,
                    metadata=metadata,
                    client_ip=body.client_ip,
                )
            )


def _parse_request_operation(name: str) -> Operation:
    """The operation the client asked for; none means a query."""
    if not name:
        return Operation.EXECUTE_SELECT
    try:
        return parse_operation(name)
    except UnsupportedOperationError as exc:
        raise Validation(str(exc)) from None


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
        approvers=first_step_approvers(workflow) if pending else (),
        idempotent=True,
        expires_at=existing.expires_at if pending else None,
    )
