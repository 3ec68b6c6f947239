"""The agents port: the registry of agents, one row per agent, rewritten by every poll."""

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
    #: Every configured `agent_id` seen behind this token (our agents may send one).
    agent_ids: tuple[str, ...] = ()
    created_at: datetime | None = None


@dataclass(frozen=True)
class AgentUpsert:
    """What one poll writes into the registry."""

    record: AgentRecord
    operations: tuple[Operation, ...] = ()
    token_id: str | None = None


class AgentRepository(Protocol):
    def get_agent(self, agent_id: str) -> AgentRow | None: ...

    def upsert_agent(self, upsert: AgentUpsert, now: datetime) -> bool:
        """Write the poll's view of the agent; True when the row is new (first poll)."""
        ...

    def list_agents(self) -> list[AgentRow]: ...
