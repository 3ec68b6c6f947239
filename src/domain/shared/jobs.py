"""The messages of the agent protocol: polls, claims, EXPLAIN jobs, results and status.

Both programs speak in these types: the agent builds requests and reads replies, the
server reads requests and builds replies, and `adapters.wire.agent_protocol` maps each
one to and from its JSON body. Field names follow the dbward 0.2 wire protocol
(docs/protocol.md §3) one to one. Raw strings are kept where the protocol signs them byte
for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.shared.scopes import Capabilities, Scope


@dataclass(frozen=True)
class DispatchedJob:
    """A request in `dispatched` state offered by a poll. The claim decides who runs it."""

    id: str
    operation: str
    database: str
    environment: str
    #: The requester and the request text: informative, the agent runs only what the
    #: claim signs (docs/protocol.md §3.2).
    created_by: str = ""
    detail: str = ""

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


@dataclass(frozen=True)
class DryRunJob:
    """An EXPLAIN for approval context. Offered to every matching agent; claimed separately."""

    id: str
    request_id: str
    database: str
    environment: str
    sql: str

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


@dataclass(frozen=True)
class PreflightJob:
    """An EXPLAIN the server already claimed for this agent during the poll."""

    id: str
    database: str
    environment: str
    sql: str
    claim_token: str

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


@dataclass(frozen=True)
class ClaimedJob:
    """The claim response: everything needed to verify and run one execution."""

    execution_id: str
    request_id: str
    execution_token: str
    operation: str
    database: str
    environment: str
    detail: str
    statement_timeout_secs: int | None
    max_rows: int | None
    lease_expires_at: str
    execution_plan: tuple[str, ...] | None = None
    execution_plan_json: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.database, self.environment)


@dataclass(frozen=True)
class ActiveJobStatus:
    """One entry of `status.active_jobs` in a poll."""

    request_id: str
    operation: str
    elapsed_secs: int


@dataclass(frozen=True)
class AgentStatus:
    """The poll's `status` block: lets the server show load and route preflights."""

    in_flight: int
    in_flight_preflight: int
    max_concurrent: int
    draining: bool
    uptime_secs: int
    active_jobs: tuple[ActiveJobStatus, ...] = ()


@dataclass(frozen=True)
class PollRequest:
    """`POST /api/agent/poll` (docs/protocol.md §3.2).

    Our agent fills every field. `None` is a key a peer left out (or sent
    as null), which the server reads as dbward 0.2's behaviour (§15 rule 3): no `status`
    counts as idle, no `limit` as 10. Operations are canonical names only (an alias is
    refused when the body is read).
    """

    capabilities: Capabilities
    status: AgentStatus | None = None
    limit: int | None = None
    agent_version: str | None = None
    agent_build: str | None = None
    #: How long the server may hold the poll open; 0 asks for an immediate answer.
    wait_ms: int = 0
    #: Configured scopes left out of `capabilities` because their database is down
    #: (additive: shown by our server's `GET /api/agents`, ignored by dbward 0.2).
    degraded_scopes: tuple[Scope, ...] = ()
    #: The agent's configured name; dbward 0.2 always sends null (§2.1). Our server keys
    #: its registry by (token subject, agent_id).
    agent_id: str | None = None
    #: Ours, additive (§3.2): claim the jobs of the answer for this agent, with this
    #: lease, so they come back claimed instead of each needing a claim call. A dbward 0.2
    #: server ignores it and answers unclaimed jobs, which the agent then claims itself.
    claim: PollClaim | None = None


@dataclass(frozen=True)
class PollResponse:
    jobs: tuple[DispatchedJob, ...] = ()
    dry_run_jobs: tuple[DryRunJob, ...] = ()
    preflight_jobs: tuple[PreflightJob, ...] = ()
    server_version: str | None = None
    min_agent_version: str | None = None
    upgrade_required: bool = False
    #: The hold the server says it honoured (our servers echo `wait_ms`); None when the
    #: server ignores long-polling, in which case the agent paces itself.
    held_wait_ms: int | None = None
    #: Jobs the server claimed for this agent because the poll asked (`PollRequest.claim`):
    #: each exactly what a claim call would have answered.
    claimed_jobs: tuple[ClaimedJob, ...] = ()


@dataclass(frozen=True)
class PollClaim:
    """A poll's request to have its jobs claimed (additive, §3.2): the lease the agent
    asks for, as in a claim's body; `None` takes the execution policy's."""

    lease_duration_secs: int | None = None


@dataclass(frozen=True)
class ClaimRequest:
    """The optional claim body: the lease the agent asks for (additive, §3.3).

    `None` is a bodiless claim, which gets the policy lease as from a dbward 0.2 agent.
    `agent_id` names the claiming agent among those sharing its token (our agent sends
    its configured one, as in its polls); `None` leaves the server to check the claim
    against every agent of the token.
    """

    lease_duration_secs: int | None = None
    agent_id: str | None = None


@dataclass(frozen=True)
class HeartbeatReply:
    cancelled: bool


@dataclass(frozen=True)
class JobResult:
    """The result body. `None` fields are omitted on the wire; `success` is always sent."""

    success: bool
    result_data: str | None = None
    error_message: str | None = None
    rows_affected: int | None = None
    truncated: bool | None = None
    total_rows: int | None = None
    duration_ms: int | None = None

    @classmethod
    def failure(cls, message: str, duration_ms: int | None = None) -> JobResult:
        return cls(success=False, error_message=message, duration_ms=duration_ms)


@dataclass(frozen=True)
class ResultReceipt:
    """The server's answer to a result: the request and the status it is in now
    (`executed`, `failed`, or `cancelled` for a request cancelled while it ran)."""

    request_id: str
    status: str


@dataclass(frozen=True)
class ExecutionOutput:
    """What a database returns for a successful operation, before timing is added."""

    result_data: str
    rows_affected: int | None = None
    truncated: bool | None = None
    total_rows: int | None = None


@dataclass(frozen=True)
class SchemaReport:
    """Body of `POST /api/agent/schema-sync` for one scope."""

    scope: Scope
    dialect: str
    status: str
    #: A JSON object from our agent (docs/protocol.md §8.2); the server keeps any JSON.
    snapshot: Any = None
    error_message: str | None = None


@dataclass(frozen=True)
class ExplainOutcome:
    """An EXPLAIN plan, or the error that prevented it.

    The agent sets exactly one. A body read by the server may carry both or neither: a
    dry run's error wins over its plan (§3.8), a preflight answer must have exactly one
    (§3.9).
    """

    plan: Any = None
    error: str | None = None


@dataclass(frozen=True)
class DryRunResult:
    """Body of `POST /api/agent/dry-run/{job_id}/result`: the outcome and the claim token
    the dry-run claim handed out, so a stale or foreign answer cannot land (§3.8)."""

    claim_token: str
    outcome: ExplainOutcome


@dataclass(frozen=True)
class PreflightResult:
    """Body of `POST /api/agent/preflight-result`: the outcome of a preflight job, with
    the claim token that came with it in the poll (§3.9)."""

    job_id: str
    claim_token: str
    outcome: ExplainOutcome
