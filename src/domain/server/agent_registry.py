"""The server's view of its agents (docs/server.md §7.3, docs/protocol.md §3.2, §3.10).

Polls write the agent's row (at once when something the server acts on changed, else
at most every few seconds: docs/protocol.md §3.2 step 3); nothing else does. Health is
therefore never stored:
it is derived on read from `last_seen_at` and the load the agent last reported, so a
crashed agent turns `offline` without any job having to notice.

Our changes to the reference, both additive on the wire:

* Agents are keyed by (token subject, configured `agent_id`) rather than by subject only
  (docs/server.md §7.3), so replicas sharing one token keep their own scopes, load and
  health. An agent that does not name itself (dbward 0.2 always sends null) is kept under
  `UNNAMED_AGENT`, so it still has exactly one row per token, as in the reference.
* `degraded_scopes`: the scopes an agent has dropped because their database is down
  (docs/agent.md §5 improvement 2). They are shown, never matched: a degraded scope is not
  eligible for work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.server.errors import Validation
from domain.shared.jobs import ActiveJobStatus, AgentStatus
from domain.shared.scopes import Scope, is_valid_scope_name

#: An agent not heard from for longer than this is offline.
OFFLINE_AFTER_SECS = 60
#: `max_concurrent` assumed when a poll carries no `status` block.
DEFAULT_MAX_CONCURRENT = 4
#: `last_poll_ago_secs` shown for an agent that never polled.
NEVER_POLLED_SECS = 9999
#: The `agent_id` of an agent that sent none (null or ""): one row per token for those.
UNNAMED_AGENT = ""


class AgentState(StrEnum):
    """What the agent said about itself in its last poll."""

    ACTIVE = "active"
    DRAINING = "draining"


class DerivedStatus(StrEnum):
    """What `GET /api/agents` shows, computed at read time."""

    HEALTHY = "healthy"
    SATURATED = "saturated"
    DRAINING = "draining"
    OFFLINE = "offline"


class QueueHint(StrEnum):
    """Why a dispatched request may be waiting, shown in `GET /api/requests/{id}`."""

    NO_AGENTS = "no_agents"
    AGENTS_DRAINING = "agents_draining"
    AGENTS_SATURATED = "agents_saturated"


@dataclass(frozen=True)
class AgentRecord:
    """One agent row, keyed by (`id`, `agent_id`): the agent token's subject and the name
    the agent sent (`UNNAMED_AGENT` when it sent none)."""

    id: str
    scopes: tuple[Scope, ...]
    status: AgentState
    max_concurrent: int
    in_flight: int
    uptime_secs: int
    active_jobs: tuple[ActiveJobStatus, ...]
    last_seen_at: datetime | None
    degraded_scopes: tuple[Scope, ...] = ()
    agent_id: str = UNNAMED_AGENT
    agent_version: str | None = None
    agent_build: str | None = None

    def serves(self, scope: Scope) -> bool:
        """Exact scope match only: agents advertise no wildcards, and degraded scopes are out."""
        return scope in self.scopes and scope not in self.degraded_scopes


def validate_poll_scopes(scopes: Iterable[Scope | tuple[str, str]]) -> tuple[Scope, ...]:
    """Check and deduplicate the scopes of a poll (docs/protocol.md §3.2 step 2).

    A wildcard anywhere is refused before any name is checked, as the reference does, so
    an agent configured with `*` gets the message that explains its mistake.
    """
    pairs = [
        (scope.database, scope.environment) if isinstance(scope, Scope) else scope
        for scope in scopes
    ]
    if any(database == "*" or environment == "*" for database, environment in pairs):
        raise Validation("wildcard '*' is not allowed in scopes")
    unique: dict[Scope, None] = {}
    for database, environment in pairs:
        if not is_valid_scope_name(database):
            raise Validation(f"invalid database in scope: {database}")
        if not is_valid_scope_name(environment):
            raise Validation(f"invalid environment in scope: {environment}")
        unique.setdefault(Scope(database, environment), None)
    return tuple(unique)


def registry_agent_id(sent: str | None) -> str:
    """The registry's `agent_id` for what a poll or claim sent: none (null, absent or "")
    is `UNNAMED_AGENT`."""
    return sent or UNNAMED_AGENT


def speaking_agents(
    records: Iterable[AgentRecord], sent_agent_id: str | None
) -> tuple[AgentRecord, ...]:
    """The agents of one token that a call speaks for (docs/server.md §7.3).

    A call naming its agent (our agent's claims do) speaks for that agent alone. A call
    naming none cannot be told apart from the token's other agents (dbward 0.2's claims
    are bodiless), so it speaks for all of them: its scopes are their union.
    """
    if sent_agent_id is None:
        return tuple(records)
    wanted = registry_agent_id(sent_agent_id)
    return tuple(record for record in records if record.agent_id == wanted)


def advertises(records: Iterable[AgentRecord], scope: Scope) -> bool:
    """Whether any of `records` listed `scope` in its last poll's `capabilities.scopes`."""
    return any(scope in record.scopes for record in records)


def record_from_poll(
    subject_id: str,
    scopes: Iterable[Scope],
    status: AgentStatus | None,
    now: datetime,
    *,
    agent_id: str | None = None,
    degraded_scopes: Iterable[Scope] = (),
    agent_version: str | None = None,
    agent_build: str | None = None,
) -> AgentRecord:
    """The row a poll writes. A poll without `status` means an idle, non-draining agent."""
    if status is None:
        status = AgentStatus(
            in_flight=0,
            in_flight_preflight=0,
            max_concurrent=DEFAULT_MAX_CONCURRENT,
            draining=False,
            uptime_secs=0,
        )
    return AgentRecord(
        id=subject_id,
        agent_id=registry_agent_id(agent_id),
        scopes=tuple(scopes),
        status=AgentState.DRAINING if status.draining else AgentState.ACTIVE,
        max_concurrent=status.max_concurrent,
        in_flight=status.in_flight,
        uptime_secs=status.uptime_secs,
        active_jobs=status.active_jobs,
        last_seen_at=now,
        degraded_scopes=tuple(degraded_scopes),
        agent_version=agent_version,
        agent_build=agent_build,
    )


def seconds_since_seen(record: AgentRecord, now: datetime) -> float | None:
    if record.last_seen_at is None:
        return None
    return (now - record.last_seen_at).total_seconds()


def derived_status(
    record: AgentRecord, now: datetime, offline_after_secs: float = OFFLINE_AFTER_SECS
) -> DerivedStatus:
    """offline (silent > 60 s), else draining, else saturated (in_flight >= max), else healthy."""
    silent_for = seconds_since_seen(record, now)
    if silent_for is None or silent_for > offline_after_secs:
        return DerivedStatus.OFFLINE
    if record.status is AgentState.DRAINING:
        return DerivedStatus.DRAINING
    if record.in_flight >= record.max_concurrent:
        return DerivedStatus.SATURATED
    return DerivedStatus.HEALTHY


def queue_hint(
    agents: Iterable[AgentRecord],
    scope: Scope,
    now: datetime,
    offline_after_secs: float = OFFLINE_AFTER_SECS,
) -> QueueHint | None:
    """Why a request dispatched to `scope` may not be picked up, or None when it should be.

    Only online agents serving the scope exactly count. None of them → `no_agents`. If
    any is healthy there is no hint. Otherwise they are all draining (`agents_draining`) or
    at least one is saturated and will free a slot (`agents_saturated`); the reference
    leaves a draining/saturated mix without a hint, which hides the very case it explains.
    """
    statuses = [
        derived_status(agent, now, offline_after_secs) for agent in agents if agent.serves(scope)
    ]
    online = [status for status in statuses if status is not DerivedStatus.OFFLINE]
    if not online:
        return QueueHint.NO_AGENTS
    if DerivedStatus.HEALTHY in online:
        return None
    if all(status is DerivedStatus.DRAINING for status in online):
        return QueueHint.AGENTS_DRAINING
    return QueueHint.AGENTS_SATURATED


@dataclass(frozen=True)
class AgentView:
    """One entry of `GET /api/agents`: load figures are blanked when the agent is offline."""

    id: str
    agent_id: str
    status: DerivedStatus
    last_poll_ago_secs: int
    in_flight: int
    max_concurrent: int
    uptime_secs: int
    active_jobs: tuple[ActiveJobStatus, ...]
    scopes: tuple[Scope, ...]
    degraded_scopes: tuple[Scope, ...]


def agent_view(
    record: AgentRecord, now: datetime, offline_after_secs: float = OFFLINE_AFTER_SECS
) -> AgentView:
    status = derived_status(record, now, offline_after_secs)
    silent_for = seconds_since_seen(record, now)
    offline = status is DerivedStatus.OFFLINE
    return AgentView(
        id=record.id,
        agent_id=record.agent_id,
        status=status,
        last_poll_ago_secs=NEVER_POLLED_SECS if silent_for is None else max(int(silent_for), 0),
        in_flight=record.in_flight,
        max_concurrent=record.max_concurrent,
        uptime_secs=0 if offline else record.uptime_secs,
        active_jobs=() if offline else record.active_jobs,
        scopes=record.scopes,
        degraded_scopes=record.degraded_scopes,
    )
