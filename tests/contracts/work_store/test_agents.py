"""`AgentRepository`: the same behaviour from the fake, SQLite and PostgreSQL.

The registry is keyed by (token subject, `agent_id`): agents sharing a token keep their
own rows (docs/server.md §7.3)."""

from __future__ import annotations

from application.server.ports.work import WorkRepository
from application.server.ports.work.agents import AgentRow, AgentUpsert
from domain.server.agent_registry import UNNAMED_AGENT, AgentRecord, AgentState
from domain.shared.jobs import ActiveJobStatus
from domain.shared.operations import Operation
from tests.contracts.work_store.records import BILLING, PROD, STAGING, T0, at


def a_poll(subject: str, agent_id: str = "agent-a", **fields: object) -> AgentRecord:
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

    assert work.subject_agents("sub-1") == [
        AgentRow(
            record=record,
            operations=(Operation.EXECUTE_SELECT, Operation.MIGRATE_UP),
            token_id="tok-1",
            created_at=T0,
        )
    ]
    assert work.subject_agents("missing") == []


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

    assert work.subject_agents("sub-1") == [AgentRow(record=later, created_at=T0)]


def test_agents_sharing_a_subject_keep_their_own_rows(work: WorkRepository) -> None:
    prod = a_poll("sub-1", "replica-a", scopes=(PROD,), in_flight=2, agent_version="0.2.0")
    staging = a_poll("sub-1", "replica-b", scopes=(STAGING,), in_flight=0)

    assert work.upsert_agent(AgentUpsert(prod, token_id="tok-1"), T0)
    assert work.upsert_agent(AgentUpsert(staging, token_id="tok-1"), at(1))
    assert not work.upsert_agent(AgentUpsert(prod, token_id="tok-1"), at(2))

    assert work.subject_agents("sub-1") == [
        AgentRow(record=prod, token_id="tok-1", created_at=T0),
        AgentRow(record=staging, token_id="tok-1", created_at=at(1)),
    ]


def test_an_agent_that_never_named_itself_is_the_unnamed_row_of_its_subject(
    work: WorkRepository,
) -> None:
    unnamed = a_poll("sub-1", UNNAMED_AGENT)
    work.upsert_agent(AgentUpsert(unnamed), T0)
    work.upsert_agent(AgentUpsert(a_poll("sub-1", "replica-a")), T0)

    rows = work.subject_agents("sub-1")

    assert [row.record.agent_id for row in rows] == ["", "replica-a"]
    assert rows[0].record == unnamed


def test_agents_are_listed_by_subject_then_agent_id(work: WorkRepository) -> None:
    for subject, agent_id in (("sub-b", "x"), ("sub-a", "y"), ("sub-c", ""), ("sub-a", "x")):
        work.upsert_agent(AgentUpsert(a_poll(subject, agent_id)), T0)

    assert [(row.record.id, row.record.agent_id) for row in work.list_agents()] == [
        ("sub-a", "x"),
        ("sub-a", "y"),
        ("sub-b", "x"),
        ("sub-c", ""),
    ]


def test_agents_unseen_since_the_cutoff_are_deleted_oldest_first_and_returned(
    work: WorkRepository,
) -> None:
    for name, seen in (("new", 30), ("old", 5), ("older", 1), ("oldest", 0)):
        work.upsert_agent(AgentUpsert(a_poll("sub-1", name, last_seen_at=at(seen))), T0)

    deleted = work.delete_agents_unseen_since(at(10), limit=2)

    assert [row.record.agent_id for row in deleted] == ["oldest", "older"]
    assert deleted[0].record == a_poll("sub-1", "oldest", last_seen_at=at(0))
    assert [row.record.agent_id for row in work.list_agents()] == ["new", "old"]
    assert [r.record.agent_id for r in work.delete_agents_unseen_since(at(10), 10)] == ["old"]
    assert work.delete_agents_unseen_since(at(10), 10) == []
    assert [row.record.agent_id for row in work.list_agents()] == ["new"]
