"""`POST /api/agent/jobs/{request_id}/claim`: a dispatched request becomes a running
execution, with a signed execution token and a lease.

* **Requested leases** (improvement 12): a claim may carry `{"lease_duration_secs": N}`;
  `domain.server.execution_policies.lease_seconds` clamps it. A bodiless claim gets the
  reference lease.
* **Agents sharing a token** (docs/server.md §7.3): a claim body may name the claiming
  agent (`agent_id`, as its polls do); the scope check is then against that agent's own
  last poll. A claim naming none (dbward 0.2's are bodiless) is checked against the union
  of the token's agents' scopes.
* **Statement timeouts** follow the agent brief: the execution policy's timeout (workflow
  override included) when an `[[execution_policies]]` entry matches the scope, else
  null, so the agent's own `statement_timeout_secs` applies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from application.log_context import bind_ids, scoped_ids
from application.server.agent_protocol.ownership import calling_agents
from application.server.audit_events import about_request, audit_event
from application.server.ports.metrics import NO_METRICS, ServerMetrics
from application.server.ports.services import (
    DispatchNotifier,
    ExecutionTokenSigner,
    ServerClock,
    request_topic,
)
from application.server.ports.work.executions import (
    ExecutionAlreadyClaimed,
    ExecutionRecord,
    ExecutionStatus,
)
from application.server.ports.work.requests import RequestRecord
from application.server.requests.common import ServerDraining, new_uuid
from application.server.requests.decision_trace import requester_role
from application.server.requests.snapshots import workflow_from_snapshot
from application.server.settings import ServerSettings
from domain.server.agent_registry import AgentState, advertises
from domain.server.errors import Conflict, Forbidden, NotFound
from domain.server.execution_policies import (
    MIGRATION_MUTATIONS,
    ExecutionPolicy,
    effective_statement_timeout,
    lease_seconds,
)
from domain.server.rbac import AgentExecution, Permission, Principal, authorize
from domain.server.request_lifecycle import RequestStatus, Trigger, transition
from domain.server.workflows import WILDCARD
from domain.shared.execution_token import detail_hash, signed_message
from domain.shared.jobs import ClaimedJob
from domain.shared.scopes import Scope
from domain.shared.timestamps import rfc3339_nanos

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["TOKEN_TTL_SECS", "ClaimJob"]

log = logging.getLogger("dbward.server.agents")

#: Execution tokens are valid this long after signing.
TOKEN_TTL_SECS = 300


class ClaimJob:
    """One claim: every refusal checked, the status change, the execution row and its
    audit event in a single transaction, so two agents racing for a job cannot both win.
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        signer: ExecutionTokenSigner,
        notifier: DispatchNotifier,
        draining: Callable[[], bool] = lambda: False,
        new_id: Callable[[], str] = new_uuid,
        metrics: ServerMetrics = NO_METRICS,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._signer = signer
        self._notifier = notifier
        self._draining = draining
        self._new_id = new_id
        self._metrics = metrics

    @scoped_ids
    def claim(
        self,
        principal: Principal,
        request_id: str,
        requested_lease_secs: int | None = None,
        agent_id: str | None = None,
        *,
        for_poll: bool = False,
    ) -> ClaimedJob:
        """§3.3 in order, in one transaction. `agent_id` is the claim body's: the scope
        check is against that agent's last poll, or the token's agents' when it is None.

        `for_poll`: the claim is made for a poll that asked for it (§3.2 step 9), which
        is refused (409) once the agent's latest poll said it is draining: a poll held
        from before its shutdown signal must not take new work for it.
        """
        bind_ids(request_id=request_id)
        if self._draining():
            raise ServerDraining()
        now = self._clock.now()
        with self._store.write() as session:
            agents = calling_agents(session, principal, agent_id)
            if not agents:
                raise NotFound("agent not registered")
            if for_poll and any(agent.status is AgentState.DRAINING for agent in agents):
                raise Conflict("the agent is draining")
            authorize(principal, Permission.AGENT_OPERATE)
            record = session.work.get_request(request_id)
            if record is None:
                raise NotFound("request not found")
            transition(record.status, Trigger.CLAIM)
            if not advertises(agents, record.scope):
                raise Forbidden(
                    f"agent {_agent_name(principal, agent_id)} does not serve "
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
                        "agent_name": agent_id,
                        "lease_secs": lease,
                        "statement_timeout_secs": timeout,
                    },
                    **about_request(record, execution.id),
                )
            )
        self._notifier.notify(request_topic(record.id))
        # `updated_at` of a dispatched request is the moment it was dispatched.
        self._metrics.job_claimed(record.operation, (now - record.updated_at).total_seconds())
        bind_ids(execution_id=execution.id)
        log.info("claimed by agent %s", principal.subject_id)
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
        """The execution token string of docs/protocol.md §4.1, signed with Ed25519."""
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


def _agent_name(principal: Principal, agent_id: str | None) -> str:
    """How a refusal names the claimant: the token's subject, and its agent when named."""
    return principal.subject_id if not agent_id else f"{principal.subject_id}/{agent_id}"
