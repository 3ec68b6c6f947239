"""`POST /api/agent/jobs/{execution_id}/result`: an execution's outcome completes its request.

* **Late results** (improvement 4): a result for an execution the lease sweep declared
  lost is accepted while no newer execution of its request exists.
* A success's content is relayed in memory to the client waiting for it instead of
  persisted when the result policy is stream-only or the request asked for `no_store`; a
  failure's content is always persisted. The summary row is stored either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from application.log_context import bind_ids, scoped_ids
from application.server.agent_protocol.ownership import owned_execution
from application.server.audit_events import about_request, audit_event
from application.server.ports.result_relay import ResultRelay
from application.server.ports.services import (
    DispatchNotifier,
    ResultContentStore,
    ServerClock,
    request_topic,
    result_topic,
)
from application.server.ports.work.executions import (
    ExecutionCompletion,
    ExecutionRecord,
    ExecutionStatus,
    ResultSummary,
)
from application.server.ports.work.requests import RequestRecord, RequestUpdate
from application.server.requests.common import new_uuid
from application.server.requests.results import RAN_STATUSES, result_envelope
from application.server.settings import AuditRedaction, ServerSettings
from domain.server.errors import Conflict, PayloadTooLarge, ServerDomainError
from domain.server.execution_policies import ResultPolicy
from domain.server.rbac import Permission, Principal, authorize
from domain.server.request_lifecycle import RequestStatus, Trigger, transition
from domain.server.text_limits import truncate_utf8
from domain.shared.jobs import JobResult
from domain.shared.operations import Operation

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreSession
    from application.server.requests.fresh_results import FreshResults

__all__ = ["SubmitResult"]

#: The longest error class (the text before the first ':') the audit log keeps.
_MAX_ERROR_CLASS_CHARS = 64


#: How much of a failure's error message the result summary keeps.
MAX_STORED_ERROR_BYTES = 4096


log = logging.getLogger("dbward.server.agents")


#: The largest result body whose submission is short store work (`is_long_work`).
SHORT_BODY_BYTES = 64 * 1024


class SubmitResult:
    """One result: the content stored (or relayed), then execution, request, summary and
    audit event in one transaction. Answers the request id and its final status.
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        notifier: DispatchNotifier,
        result_store: ResultContentStore,
        result_relay: ResultRelay,
        new_id: Callable[[], str] = new_uuid,
        fresh: FreshResults | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._notifier = notifier
        self._result_store = result_store
        # Shared with the request use cases: this side fills them, the client side reads.
        self._relay = result_relay
        self._fresh = fresh
        self._new_id = new_id

    def is_long_work(self, body: JobResult) -> bool:
        """Whether submitting `body` may take long (`StoreCalls.long`): a body that may
        be bound for a file or an object store, or too large to call short. Judged from
        its length in characters, without encoding it: UTF-8 takes at most 4 bytes each."""
        if body.result_data is None:
            return False
        most_bytes = 4 * len(body.result_data)
        return most_bytes > SHORT_BODY_BYTES or not self._result_store.kept_in_store(most_bytes)

    @scoped_ids
    def submit(
        self, principal: Principal, execution_id: str, body: JobResult
    ) -> tuple[str, RequestStatus]:
        """§3.5, with late completion accepted (see the module docstring).

        Races are decided in the write transaction that records the result. A body kept
        in the store's own table (`ResultContentStore.kept_in_store`), or no body, needs
        nothing else: checks, body and records are that one transaction. A body bound
        for a file is written between a read that checks the call and that write: each
        attempt stores it under its own key (`<request>/<execution>/<attempt>`), the
        result row records the key that won, and a losing attempt deletes only its own
        file. Whether a result is "late" is decided in the write either way, so a lease
        sweep that commits in between cannot turn an acceptable result into a 409.
        """
        authorize(principal, Permission.AGENT_OPERATE)
        data_bytes = (
            None if body.result_data is None else body.result_data.encode("utf-8", "surrogatepass")
        )
        if data_bytes is None or self._result_store.kept_in_store(len(data_bytes)):
            with self._store.write() as session:
                execution, record = _submittable(session, principal, execution_id, body)
                plan = self._plan(record, execution, body, data_bytes)
                if plan.stored_bytes is not None:
                    session.result_contents.add(plan.key, plan.stored_bytes)
                final, summary = self._record_result(session, principal, execution, body, plan)
        else:
            with self._store.read() as session:
                execution, record = _submittable(session, principal, execution_id, body)
            plan = self._plan(record, execution, body, data_bytes)
            if plan.stored_bytes is not None:
                self._result_store.put(plan.key, plan.stored_bytes)
            try:
                with self._store.write() as session:
                    final, summary = self._record_result(session, principal, execution, body, plan)
            except BaseException:
                if plan.stored_bytes is not None:
                    # This attempt's own file, never the winner's.
                    self._result_store.delete(plan.key)
                raise
        if plan.relay and body.result_data is not None:
            self._relay.put(execution.id, body.result_data)
        if (
            self._fresh is not None
            and summary is not None
            and final in RAN_STATUSES
            and (data_bytes is None or len(data_bytes) <= SHORT_BODY_BYTES)
        ):
            # The stream woken below answers this instead of reading it back.
            self._fresh.put(
                record.id,
                result_envelope(summary, self._result_store, self._relay, plan.stored_bytes),
            )
        self._notifier.notify(request_topic(record.id))
        self._notifier.notify(result_topic(record.id))
        log.info("result recorded: %s", final.value)
        return record.id, final

    def _plan(
        self,
        record: RequestRecord,
        execution: ExecutionRecord,
        body: JobResult,
        data_bytes: bytes | None,
    ) -> _ResultPlan:
        """Where the body goes: stored under a key of its own, relayed, or nowhere (413
        when it is over the size limit)."""
        limit = self._settings.result_storage.max_persist_bytes
        if data_bytes is not None and len(data_bytes) > limit:
            raise PayloadTooLarge(f"result size {len(data_bytes)} exceeds limit {limit}")
        policy = self._settings.result_policy_for(record.database, record.environment)
        persist = data_bytes is not None and (
            not body.success or (not record.no_store and policy.persists_successes)
        )
        return _ResultPlan(
            key=f"{record.id}/{execution.id}/{uuid.uuid4().hex}",
            stored_bytes=data_bytes if persist else None,
            # Not persisted (stream-only policy, or a request with no_store): relayed.
            relay=body.success and data_bytes is not None and not persist,
            policy=policy,
            now=self._clock.now(),
        )

    def _record_result(
        self,
        session: StoreSession,
        principal: Principal,
        execution: ExecutionRecord,
        body: JobResult,
        plan: _ResultPlan,
    ) -> tuple[RequestStatus, ResultSummary | None]:
        """Execution, request, result summary and audit event, in the caller's write; the
        final status, and the summary unless the result came late (a newer execution's
        may be the request's latest)."""
        now = plan.now
        error = None
        if not body.success:
            error = truncate_utf8(body.error_message or "execution failed", MAX_STORED_ERROR_BYTES)
        completion = ExecutionCompletion(
            status=ExecutionStatus.COMPLETED if body.success else ExecutionStatus.FAILED,
            finished_at=now,
            error_message=error,
        )
        late = False
        if not session.work.complete_execution(execution.id, completion):
            # Not live any more (on PostgreSQL the UPDATE waited for a concurrent
            # sweep or result to commit, so these reads see what it wrote). A lease
            # loss with no newer execution is a late completion; anything else lost.
            refusal = _late_refusal(session, execution.id)
            if refusal is not None:
                raise Conflict(refusal)
            late = True
            if not session.work.complete_execution(execution.id, replace(completion, late=True)):
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
        stored = plan.stored_bytes
        retention = plan.policy.retention_days
        summary = ResultSummary(
            id=f"res-{execution.id}",
            request_id=record.id,
            execution_id=execution.id,
            success=body.success,
            rows_affected=body.rows_affected,
            duration_ms=body.duration_ms,
            truncated=truncated,
            truncation_reason=truncation_reason,
            error_message=error,
            storage_backend=None if stored is None else self._settings.result_storage.backend,
            storage_key="" if stored is None else plan.key,
            content_length=0 if stored is None else len(stored),
            checksum_sha256=None if stored is None else hashlib.sha256(stored).hexdigest(),
            retention_days=retention,
            stored_at=now,
            expires_at=None if stored is None else now + timedelta(days=retention),
        )
        session.work.insert_result(summary)
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
        return final, None if late else summary


@dataclass(frozen=True)
class _ResultPlan:
    """What one submission does with its body, decided once its request is known."""

    #: The body's key if it is stored: each attempt has its own.
    key: str
    #: The body, when it is stored (a failure's always; a success's unless relayed).
    stored_bytes: bytes | None
    #: A success's body not stored, relayed in memory to the waiting client instead.
    relay: bool
    policy: ResultPolicy
    now: datetime


def _submittable(
    session: StoreSession, principal: Principal, execution_id: str, body: JobResult
) -> tuple[ExecutionRecord, RequestRecord]:
    """The caller's execution and its request, if this result may still be recorded."""
    execution = owned_execution(session, principal, execution_id)
    record = session.work.get_request(execution.request_id)
    if record is None:
        raise ServerDomainError("internal_error", "the execution's request is missing", 500)
    bind_ids(request_id=record.id, execution_id=execution.id)
    # Only a live execution or one the lease sweep failed can still take a result;
    # every other status is final, so refusing on this read is safe.
    if execution.status is not ExecutionStatus.CLAIMED and not execution.lost_by_lease:
        raise Conflict(f"execution is {execution.status.value}, cannot submit result")
    transition(record.status, Trigger.complete(success=body.success))
    return execution, record


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
