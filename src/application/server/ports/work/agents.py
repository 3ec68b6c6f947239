"""The agents port: the registry of agents, one row per (token subject, `agent_id`),
rewritten by that agent's polls (docs/server.md §7.3, docs/protocol.md §3.2 step 3),
deleted once it has not polled for `[retention].agent_ttl_days`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.server.agent_registry import AgentRecord
from domain.shared.operations import Operation

__all__ = ["AgentRepository", "AgentRow", "AgentUpsert"]


@dataclass(frozen=True)
class AgentRow:
    """An agent registry row: the domain record plus what only the store keeps."""

    record: AgentRecord
    operations: tuple[Operation, ...] = ()
    token_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class AgentUpsert:
    """What one poll writes into the registry."""

    record: AgentRecord
    operations: tuple[Operation, ...] = ()
    token_id: str | None = None


class AgentRepository(Protocol):
    def subject_agents(self, subject_id: str) -> list[AgentRow]:
        """Every agent registered under one token subject, by `agent_id`."""
        ...

    def upsert_agent(self, upsert: AgentUpsert, now: datetime) -> bool:
        """Write the poll's view of the agent (`record.id`, `record.agent_id`); True when
        the row is new (that agent's first poll)."""
        ...

    def list_agents(self) -> list[AgentRow]:
        """Every agent, by subject then `agent_id`."""
        ...

    def delete_agents_unseen_since(self, cutoff: datetime, limit: int) -> list[AgentRow]:
        """Delete up to `limit` agents whose last poll is older than `cutoff` (oldest
        first) and return them; an agent that polls meanwhile is kept."""
        ...
