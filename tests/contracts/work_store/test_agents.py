"""`AgentRepository`: the same behaviour from the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

from application.server.ports.work import WorkRepository
from application.server.ports.work.agents import AgentRow, AgentUpsert
from domain.server.agent_registry import AgentRecord, AgentState
from domain.shared.jobs import ActiveJobStatus
from domain.shared.operations import Operation
from tests.contracts.work_store.records import BILLING, PROD, STAGING, T0, at


def a_poll(subject: str, agent_id: str | None = "agent-a", **fields: object) -> AgentRecord:
    values: dict[str, object] = {
        "id": subject,
        "agent_id": agent_id,
        "scopes": (PROD, STAGING),
        "status": AgentState.ACTIVE,
        "max_concurrent": 4,
        "in_flight": 1,
        "uptime_secs": 120,
        "active_jobs": (ActiveJobStatus("r1", "execute_select", 3),),
        "last_seen_at": at(10),
        "degraded_scopes": (BILLING,),
        "agent_version": "1.4.0",
        "agent_build": "abc123",
    }
    values.update(fields)
    return AgentRecord(**values)  # type: ignore[arg-type]


def test_the_first_poll_creates_the_row(work: WorkRepository) -> None:
    record = a_poll("sub-1")
    upsert = AgentUpsert(
        record, operations=(Operation.EXECUTE_SELECT, Operation.MIGRATE_UP), token_id="tok-1"
    )

    assert work.upsert_agent(upsert, T0)

    assert work.get_agent("sub-1") == AgentRow(
        record=record,
        operations=(Operation.EXECUTE_SELECT, Operation.MIGRATE_UP),
        token_id="tok-1",
        agent_ids=("agent-a",),
        created_at=T0,
    )
    assert work.get_agent("missing") is None


def test_a_later_poll_rewrites_the_row_but_not_its_creation(work: WorkRepository) -> None:
    work.upsert_agent(AgentUpsert(a_poll("sub-1"), token_id="tok-1"), T0)
    later = a_poll(
        "sub-1",
        scopes=(PROD,),
        status=AgentState.DRAINING,
        max_concurrent=2,
        in_flight=0,
        uptime_secs=300,
        active_jobs=(),
        last_seen_at=None,
        degraded_scopes=(),
        agent_version=None,
        agent_build=None,
    )

    assert not work.upsert_agent(AgentUpsert(later), at(60))

    assert work.get_agent("sub-1") == AgentRow(record=later, agent_ids=("agent-a",), created_at=T0)


def test_every_agent_id_seen_is_kept_and_the_newest_one_reads_back(
    work: WorkRepository,
) -> None:
    def poll(agent_id: str | None) -> AgentRow | None:
        work.upsert_agent(AgentUpsert(a_poll("sub-1", agent_id)), T0)
        return work.get_agent("sub-1")

    first = poll("agent-a")
    second = poll("agent-b")
    again = poll("agent-a")  # seen before: not newer than agent-b
    without = poll(None)

    assert first is not None and first.agent_ids == ("agent-a",)
    assert second is not None and second.agent_ids == ("agent-a", "agent-b")
    assert again is not None and again.agent_ids == ("agent-a", "agent-b")
    assert again.record == replace(a_poll("sub-1"), agent_id="agent-b")
    assert without is not None and without.agent_ids == ("agent-a", "agent-b")
    assert without.record.agent_id == "agent-b"


def test_an_agent_that_never_named_itself_has_no_agent_id(work: WorkRepository) -> None:
    work.upsert_agent(AgentUpsert(a_poll("sub-1", None)), T0)

    row = work.get_agent("sub-1")

    assert row is not None and (row.record.agent_id, row.agent_ids) == (None, ())


def test_agents_are_listed_by_subject(work: WorkRepository) -> None:
    for subject in ("sub-b", "sub-c", "sub-a"):
        work.upsert_agent(AgentUpsert(a_poll(subject)), T0)

    assert [row.record.id for row in work.list_agents()] == ["sub-a", "sub-b", "sub-c"]
