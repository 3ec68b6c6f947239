"""`AgentRepository` over SQLAlchemy Core: the `agents` registry, one row per
(token subject, `agent_id`) (docs/server.md §7.3)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update

from adapters.store.prepared import prepared
from adapters.store.schema import agents
from adapters.store.work.base import SqlRepository, optional_timestamp, parse_optional_timestamp
from application.server.ports.work.agents import AgentRow, AgentUpsert
from domain.server.agent_registry import AgentRecord, AgentState
from domain.shared.jobs import ActiveJobStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp


def _scopes_json(scopes: Iterable[Scope]) -> str:
    return json.dumps([{"database": s.database, "environment": s.environment} for s in scopes])


def _parse_scopes(raw: str | None) -> tuple[Scope, ...]:
    return tuple(Scope(item["database"], item["environment"]) for item in json.loads(raw or "[]"))


def _agent(row: Row[Any]) -> AgentRow:
    m = row._mapping
    record = AgentRecord(
        id=m["id"],
        agent_id=m["agent_id"],
        scopes=_parse_scopes(m["databases_json"]),
        status=AgentState(m["status"]),
        max_concurrent=m["max_concurrent"],
        in_flight=m["in_flight"],
        uptime_secs=m["uptime_secs"],
        active_jobs=tuple(
            ActiveJobStatus(
                request_id=job["request_id"],
                operation=job["operation"],
                elapsed_secs=job["elapsed_secs"],
            )
            for job in json.loads(m["active_jobs_json"] or "[]")
        ),
        last_seen_at=parse_optional_timestamp(m["last_seen_at"]),
        degraded_scopes=_parse_scopes(m["degraded_scopes_json"]),
        agent_version=m["agent_version"],
        agent_build=m["agent_build"],
    )
    return AgentRow(
        record=record,
        operations=tuple(Operation(op) for op in json.loads(m["operations_json"] or "[]")),
        token_id=m["token_id"],
        created_at=parse_optional_timestamp(m["created_at"]),
    )


#: Built once: every claim reads the claimant's agents.
#: Built once: a busy agent's polls rewrite its row whenever its saturation flips. SET
#: takes the parameter keys that name columns, WHERE the `_`-prefixed ones.
_UPDATE_AGENT = prepared(
    update(agents).where(
        agents.c.id == bindparam("_id"), agents.c.agent_id == bindparam("_agent_id")
    )
)
_SUBJECT_AGENTS = prepared(
    select(agents).where(agents.c.id == bindparam("_id")).order_by(agents.c.agent_id)
)


class SqlAgentRepository(SqlRepository):
    def subject_agents(self, subject_id: str) -> list[AgentRow]:
        return self._all(_SUBJECT_AGENTS, _agent, {"_id": subject_id})

    def upsert_agent(self, upsert: AgentUpsert, now: datetime) -> bool:
        """Insert the agent's row, or rewrite it when it exists; two replicas' first polls
        racing still end with one row, and only the insert that won reports it new."""
        record = upsert.record
        values: dict[str, Any] = {
            "token_id": upsert.token_id,
            "databases_json": _scopes_json(record.scopes),
            "operations_json": json.dumps([op.value for op in upsert.operations]),
            "status": record.status.value,
            "max_concurrent": record.max_concurrent,
            "in_flight": record.in_flight,
            "uptime_secs": record.uptime_secs,
            "active_jobs_json": json.dumps(
                [
                    {
                        "request_id": job.request_id,
                        "operation": job.operation,
                        "elapsed_secs": job.elapsed_secs,
                    }
                    for job in record.active_jobs
                ]
            ),
            "agent_version": record.agent_version,
            "agent_build": record.agent_build,
            "degraded_scopes_json": _scopes_json(record.degraded_scopes),
            "last_seen_at": optional_timestamp(record.last_seen_at),
        }
        keyed = {**values, "_id": record.id, "_agent_id": record.agent_id}
        if self._conn.execute(_UPDATE_AGENT, keyed).rowcount:
            return False
        if self._insert_or_conflict(
            insert(agents).values(
                id=record.id,
                agent_id=record.agent_id,
                created_at=format_timestamp(now),
                **values,
            )
        ):
            return True
        self._conn.execute(_UPDATE_AGENT, keyed)
        return False

    def list_agents(self) -> list[AgentRow]:
        return self._all(select(agents).order_by(agents.c.id, agents.c.agent_id), _agent)

    def delete_agents_unseen_since(self, cutoff: datetime, limit: int) -> list[AgentRow]:
        unseen = agents.c.last_seen_at < format_timestamp(cutoff)
        due = self._all(
            select(agents)
            .where(unseen)
            .order_by(agents.c.last_seen_at, agents.c.id, agents.c.agent_id)
            .limit(limit),
            _agent,
        )
        deleted = []
        for row in due:
            this_agent = (agents.c.id == row.record.id) & (agents.c.agent_id == row.record.agent_id)
            if self._conn.execute(delete(agents).where(this_agent, unseen)).rowcount:
                deleted.append(row)
        return deleted
