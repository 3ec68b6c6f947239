"""An in-memory dbward server implementing ServerPort, scriptable for every behaviour.

It signs execution tokens with a real Ed25519 key exactly as the dbward 0.2 server does
(docs/protocol.md §4.1), so the agent's real verification runs against it. Scripts:
jobs for given scopes, claim conflicts, error bursts on any call, cancellations, lost
leases, forged or expired tokens, the version gate, long-poll holds.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from domain.agent.errors import ServerConflict, ServerError, ServerNotFound, ServerUnauthorized
from domain.shared.errors import DbwardError
from domain.shared.execution_token import detail_hash, signed_message
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
from domain.shared.scopes import Scope
from domain.shared.versions import version_lt

TOKEN_TTL = timedelta(minutes=5)
FIXED_SEED = bytes(range(32))
DEFAULT_SCOPE = Scope("app", "production")
DEFAULT_POLL_LIMIT = 10


def rfc3339(moment: datetime) -> str:
    """chrono's `to_rfc3339()` shape: nanosecond fraction and `+00:00`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000+00:00"


@dataclass
class FakeRequest:
    id: str
    scope: Scope
    operation: str
    detail: str
    execution_plan_json: str | None
    statement_timeout_secs: int | None = 30
    max_rows: int | None = None
    status: str = "dispatched"
    lease_secs: int = 60
    executions: list[str] = field(default_factory=list)
    token_tamper: Callable[[dict[str, str]], None] | None = None
    claim_tamper: Callable[[ClaimedJob], ClaimedJob] | None = None

    def job(self) -> DispatchedJob:
        return DispatchedJob(
            self.id,
            self.operation,
            self.scope.database,
            self.scope.environment,
            created_by="alice",
            detail=self.detail,
        )


class FakeServer:
    def __init__(
        self,
        clock: object,
        *,
        seed: bytes = FIXED_SEED,
        server_version: str = "0.2.0",
        min_agent_version: str = "0.2.0",
        honour_wait: bool = True,
        claims_with_poll: bool = False,
    ) -> None:
        """`claims_with_poll`: claim the jobs of a poll that asks (`PollRequest.claim`),
        as our server does; by default the key is ignored, as by dbward 0.2."""
        self._clock = clock
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.server_version = server_version
        self.min_agent_version = min_agent_version
        self.honour_wait = honour_wait
        self.claims_with_poll = claims_with_poll
        self.poll_claims: list[tuple[str, int]] = []
        self.public_key_override: str | None = None
        self._cond = threading.Condition()
        self.requests: dict[str, FakeRequest] = {}
        self.executions: dict[str, FakeRequest] = {}
        self.dry_runs: dict[str, DryRunJob] = {}
        self.dry_run_claimed: set[str] = set()
        self.pending_preflights: deque[PreflightJob] = deque()
        self._failures: dict[str, deque[DbwardError]] = defaultdict(deque)
        self.conflict_on_claim: set[str] = set()
        self.lost_leases: set[str] = set()
        # records
        self.calls: list[str] = []
        self.polls: list[PollRequest] = []
        self.claims: list[tuple[str, int]] = []
        self.heartbeats: list[str] = []
        self.results: dict[str, list[JobResult]] = defaultdict(list)
        self.schema_reports: list[SchemaReport] = []
        self.dry_run_results: dict[str, ExplainOutcome] = {}
        self.preflight_results: dict[str, ExplainOutcome] = {}
        self.closed = False

    # --- scripting -----------------------------------------------------------------

    def public_key_hex(self) -> str:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def dispatch(
        self,
        sql: str = "SELECT 1",
        *,
        scope: Scope = DEFAULT_SCOPE,
        operation: str = "execute_select",
        request_id: str | None = None,
        statement_timeout_secs: int | None = 30,
        max_rows: int | None = None,
        plan: list[str] | None = None,
        lease_secs: int = 60,
    ) -> FakeRequest:
        """Add a dispatched request. SQL operations get a signed one-statement plan."""
        if plan is None and operation in ("execute_select", "execute_dml"):
            plan = [sql]
        request = FakeRequest(
            id=request_id or str(uuid.uuid4()),
            scope=scope,
            operation=operation,
            detail=sql,
            execution_plan_json=None if plan is None else json.dumps(plan, separators=(",", ":")),
            statement_timeout_secs=statement_timeout_secs,
            max_rows=max_rows,
            lease_secs=lease_secs,
        )
        with self._cond:
            self.requests[request.id] = request
            self._cond.notify_all()
        return request

    def add_dry_run(self, sql: str, scope: Scope = DEFAULT_SCOPE) -> DryRunJob:
        job = DryRunJob(
            str(uuid.uuid4()), str(uuid.uuid4()), scope.database, scope.environment, sql
        )
        with self._cond:
            self.dry_runs[job.id] = job
            self._cond.notify_all()
        return job

    def add_preflight(self, sql: str, scope: Scope = DEFAULT_SCOPE) -> PreflightJob:
        job = PreflightJob(
            str(uuid.uuid4()), scope.database, scope.environment, sql, str(uuid.uuid4())
        )
        with self._cond:
            self.pending_preflights.append(job)
            self._cond.notify_all()
        return job

    def fail(self, call: str, error: DbwardError, times: int = 1) -> None:
        """Make the next `times` calls of `call` (e.g. "poll", "submit_result") raise."""
        with self._cond:
            self._failures[call].extend([error] * times)

    def cancel(self, request_id: str) -> None:
        with self._cond:
            self.requests[request_id].status = "cancelled"

    def lose_lease(self, request_id: str) -> None:
        with self._cond:
            request = self.requests[request_id]
            request.status = "execution_lost"
            self.lost_leases.update(request.executions)

    def tamper_token(self, request_id: str, change: Callable[[dict[str, str]], None]) -> None:
        self.requests[request_id].token_tamper = change

    def tamper_claim(self, request_id: str, change: Callable[[ClaimedJob], ClaimedJob]) -> None:
        self.requests[request_id].claim_tamper = change

    # --- waiting helpers for threaded tests ------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def result_for(self, request_id: str) -> JobResult | None:
        request = self.requests[request_id]
        for execution_id in request.executions:
            if self.results.get(execution_id):
                return self.results[execution_id][-1]
        return None

    # --- ServerPort ------------------------------------------------------------------

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        queue = self._failures.get(call)
        if queue:
            raise queue.popleft()

    def fetch_public_key(self) -> str:
        with self._cond:
            self._enter("fetch_public_key")
            return self.public_key_override or self.public_key_hex()

    def poll(self, request: PollRequest) -> PollResponse:
        with self._cond:
            self._enter("poll")
            self.polls.append(request)
            self._cond.notify_all()
            upgrade = bool(request.agent_version) and version_lt(
                request.agent_version or "", self.min_agent_version
            )
            if upgrade:
                return self._response(upgrade_required=True)
            # A poll without `limit` asks for up to 10 jobs, as on the real server (§3.2).
            limit = DEFAULT_POLL_LIMIT if request.limit is None else request.limit
            if self.honour_wait and request.wait_ms > 0 and limit > 0:
                self._cond.wait_for(
                    lambda: bool(self._jobs_for(request)), timeout=request.wait_ms / 1000
                )
            jobs = self._jobs_for(request)[:limit]
            scopes = set(request.capabilities.scopes)
            dry_runs = tuple(
                job
                for job in self.dry_runs.values()
                if job.id not in self.dry_run_claimed and job.scope in scopes
            )[:10]
            preflights = []
            while self.pending_preflights:
                preflights.append(self.pending_preflights.popleft())
            claimed: list[ClaimedJob] = []
            if self.claims_with_poll and request.claim is not None:
                lease = request.claim.lease_duration_secs or 60
                offered = []
                for job in jobs:
                    try:
                        claimed.append(self._claim_locked(job.id, lease))
                    except ServerConflict:
                        offered.append(job)  # the agent's own claim call meets the 409
                    else:
                        self.poll_claims.append((job.id, lease))
                jobs = offered
            return self._response(
                jobs=tuple(jobs),
                claimed_jobs=tuple(claimed),
                dry_run_jobs=dry_runs,
                preflight_jobs=tuple(preflights),
                held=request.wait_ms if self.honour_wait and request.wait_ms > 0 else None,
            )

    def _jobs_for(self, request: PollRequest) -> list[DispatchedJob]:
        scopes = set(request.capabilities.scopes)
        ops = {op.value for op in request.capabilities.operations}
        return [
            r.job()
            for r in self.requests.values()
            if r.status == "dispatched" and r.scope in scopes and (not ops or r.operation in ops)
        ]

    def _response(
        self,
        *,
        jobs: tuple[DispatchedJob, ...] = (),
        dry_run_jobs: tuple[DryRunJob, ...] = (),
        preflight_jobs: tuple[PreflightJob, ...] = (),
        upgrade_required: bool = False,
        held: int | None = None,
        claimed_jobs: tuple[ClaimedJob, ...] = (),
    ) -> PollResponse:
        return PollResponse(
            jobs=jobs,
            dry_run_jobs=dry_run_jobs,
            preflight_jobs=preflight_jobs,
            server_version=self.server_version,
            min_agent_version=self.min_agent_version,
            upgrade_required=upgrade_required,
            held_wait_ms=held,
            claimed_jobs=claimed_jobs,
        )

    def claim(self, request_id: str, lease_duration_secs: int) -> ClaimedJob:
        with self._cond:
            self._enter("claim")
            self.claims.append((request_id, lease_duration_secs))
            return self._claim_locked(request_id, lease_duration_secs)

    def _claim_locked(self, request_id: str, lease_duration_secs: int) -> ClaimedJob:
        """The claim, with `_cond` held by the caller."""
        request = self.requests.get(request_id)
        if request is None:
            raise ServerNotFound(404, "not found: request not found", "request.not_found")
        if request_id in self.conflict_on_claim or request.status != "dispatched":
            raise ServerConflict(409, "conflict: request is not dispatched", "request.conflict")
        request.status = "running"
        execution_id = str(uuid.uuid4())
        request.executions.append(execution_id)
        self.executions[execution_id] = request
        self._cond.notify_all()
        return self._claimed(request, execution_id, lease_duration_secs)

    def _claimed(self, request: FakeRequest, execution_id: str, lease: int) -> ClaimedJob:
        now: datetime = self._clock.now()  # type: ignore[attr-defined]
        token = self.sign(request, expires_at=rfc3339(now + TOKEN_TTL))
        claim = ClaimedJob(
            execution_id=execution_id,
            request_id=request.id,
            execution_token=token,
            operation=request.operation,
            database=request.scope.database,
            environment=request.scope.environment,
            detail=request.detail,
            statement_timeout_secs=request.statement_timeout_secs,
            max_rows=request.max_rows,
            lease_expires_at=rfc3339(now + timedelta(seconds=min(lease, request.lease_secs))),
            execution_plan=None
            if request.execution_plan_json is None
            else tuple(json.loads(request.execution_plan_json)),
            execution_plan_json=request.execution_plan_json,
        )
        if request.claim_tamper is not None:
            claim = request.claim_tamper(claim)
        return claim

    def sign(self, request: FakeRequest, *, expires_at: str) -> str:
        fields = {
            "request_id": request.id,
            "operation": request.operation,
            "environment": request.scope.environment,
            "database": request.scope.database,
            "detail_hash": detail_hash(
                request.operation, request.detail, request.execution_plan_json
            ),
            "issued_at": expires_at,
            "expires_at": expires_at,
            "requester_role": "requester",
            "requester_subject_id": "alice",
        }
        message = signed_message(
            request_id=fields["request_id"],
            operation=fields["operation"],
            environment=fields["environment"],
            database=fields["database"],
            detail_hash=fields["detail_hash"],
            expires_at=fields["expires_at"],
            requester_role=fields["requester_role"],
            requester_subject_id=fields["requester_subject_id"],
        )
        fields["signature"] = self._key.sign(message).hex()
        if request.token_tamper is not None:
            request.token_tamper(fields)
        return json.dumps(fields)

    def heartbeat(self, execution_id: str) -> HeartbeatReply:
        with self._cond:
            self._enter("heartbeat")
            self.heartbeats.append(execution_id)
            self._cond.notify_all()
            request = self.executions.get(execution_id)
            if request is None:
                raise ServerNotFound(404, "not found: execution not found", "request.not_found")
            if execution_id in self.lost_leases or self.results.get(execution_id):
                raise ServerConflict(409, "conflict: execution is Failed, cannot heartbeat", None)
            return HeartbeatReply(cancelled=request.status == "cancelled")

    def submit_result(self, execution_id: str, result: JobResult) -> None:
        with self._cond:
            self._enter("submit_result")
            request = self.executions.get(execution_id)
            if request is None:
                raise ServerNotFound(404, "not found: execution not found", "request.not_found")
            if self.results.get(execution_id):
                raise ServerConflict(
                    409, "conflict: execution already completed", "request.conflict"
                )
            self.results[execution_id].append(result)
            if request.status == "running":
                request.status = "executed" if result.success else "failed"
            self._cond.notify_all()

    def submit_schema(self, report: SchemaReport) -> None:
        with self._cond:
            self._enter("submit_schema")
            self.schema_reports.append(report)
            self._cond.notify_all()

    def claim_dry_run(self, job_id: str) -> str:
        with self._cond:
            self._enter("claim_dry_run")
            if job_id not in self.dry_runs:
                raise ServerError(400, "validation: dry-run job not found", "validation.failed")
            if job_id in self.dry_run_claimed:
                raise ServerConflict(409, "already_claimed")
            self.dry_run_claimed.add(job_id)
            return f"claim-{job_id}"

    def submit_dry_run_result(self, job_id: str, claim_token: str, outcome: ExplainOutcome) -> None:
        with self._cond:
            self._enter("submit_dry_run_result")
            if claim_token != f"claim-{job_id}":
                raise ServerConflict(409, "claim token mismatch")
            self.dry_run_results[job_id] = outcome
            self._cond.notify_all()

    def submit_preflight_result(
        self, job_id: str, claim_token: str, outcome: ExplainOutcome
    ) -> None:
        with self._cond:
            self._enter("submit_preflight_result")
            self.preflight_results[job_id] = outcome
            self._cond.notify_all()

    def close(self) -> None:
        self.closed = True


def unauthorized() -> ServerUnauthorized:
    return ServerUnauthorized(401, "authentication failed", "unauthorized")


def server_down() -> ServerError:
    return ServerError(503, "service unavailable")
