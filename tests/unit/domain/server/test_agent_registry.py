"""The agent registry: poll scopes, derived status, queue hints (docs/server.md §7.3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain.server.agent_registry import (
    UNNAMED_AGENT,
    AgentRecord,
    AgentState,
    DerivedStatus,
    QueueHint,
    advertises,
    agent_view,
    derived_status,
    queue_hint,
    record_from_poll,
    speaking_agents,
    validate_poll_scopes,
)
from domain.server.errors import Validation
from domain.shared.jobs import ActiveJobStatus, AgentStatus
from domain.shared.scopes import Scope

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
APP_PROD = Scope("app", "production")
APP_STAGING = Scope("app", "staging")
JOB = ActiveJobStatus(request_id="req-1", operation="execute_select", elapsed_secs=4)


def agent(
    agent_id: str = "agent",
    *,
    scopes: tuple[Scope, ...] = (APP_PROD,),
    seen_ago: float | None = 1,
    state: AgentState = AgentState.ACTIVE,
    in_flight: int = 0,
    max_concurrent: int = 2,
) -> AgentRecord:
    return AgentRecord(
        id=agent_id,
        scopes=scopes,
        status=state,
        max_concurrent=max_concurrent,
        in_flight=in_flight,
        uptime_secs=120,
        active_jobs=(JOB,) if in_flight else (),
        last_seen_at=None if seen_ago is None else NOW - timedelta(seconds=seen_ago),
    )


# --- poll scope validation (docs/protocol.md §3.2 step 2) ---------------------------------


def test_valid_scopes_are_deduplicated_in_order() -> None:
    scopes = validate_poll_scopes(
        [("app", "production"), APP_STAGING, ("app", "production"), ("b-2", "x_y")]
    )
    assert scopes == (APP_PROD, APP_STAGING, Scope("b-2", "x_y"))
    assert validate_poll_scopes([]) == ()


@pytest.mark.parametrize("pair", [("*", "production"), ("app", "*"), ("*", "*")])
def test_wildcards_are_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(Validation) as caught:
        validate_poll_scopes([pair])
    assert caught.value.message == "wildcard '*' is not allowed in scopes"
    assert caught.value.status == 400


def test_wildcard_is_reported_before_a_bad_name() -> None:
    with pytest.raises(Validation, match=r"^wildcard"):
        validate_poll_scopes([("Bad", "production"), ("app", "*")])


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (("App", "production"), "invalid database in scope: App"),
        (("1app", "production"), "invalid database in scope: 1app"),
        (("", "production"), "invalid database in scope: "),
        (("a" * 64, "production"), "invalid database in scope: " + "a" * 64),
        (("app\n", "production"), "invalid database in scope: app\n"),
        (("app", "prod env"), "invalid environment in scope: prod env"),
        (("app", "prod.eu"), "invalid environment in scope: prod.eu"),
    ],
)
def test_invalid_names(pair: tuple[str, str], message: str) -> None:
    with pytest.raises(Validation) as caught:
        validate_poll_scopes([pair])
    assert caught.value.message == message


def test_sixty_three_characters_is_the_longest_name() -> None:
    assert validate_poll_scopes([("a" * 63, "e")]) == (Scope("a" * 63, "e"),)


# --- derived status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (agent(), DerivedStatus.HEALTHY),
        (agent(seen_ago=60), DerivedStatus.HEALTHY),  # exactly 60 s: not yet offline
        (agent(seen_ago=60.5), DerivedStatus.OFFLINE),
        (agent(seen_ago=None), DerivedStatus.OFFLINE),
        (agent(state=AgentState.DRAINING, in_flight=2), DerivedStatus.DRAINING),
        (agent(in_flight=2), DerivedStatus.SATURATED),
        (agent(in_flight=3), DerivedStatus.SATURATED),
        (agent(in_flight=1), DerivedStatus.HEALTHY),
        (agent(seen_ago=120, state=AgentState.DRAINING), DerivedStatus.OFFLINE),
    ],
)
def test_derived_status(record: AgentRecord, expected: DerivedStatus) -> None:
    assert derived_status(record, NOW) is expected


def test_offline_threshold_is_configurable() -> None:
    assert derived_status(agent(seen_ago=10), NOW, offline_after_secs=5) is DerivedStatus.OFFLINE


# --- queue hint ----------------------------------------------------------------------------------


def test_no_agents_for_the_scope() -> None:
    assert queue_hint([], APP_PROD, NOW) is QueueHint.NO_AGENTS
    assert queue_hint([agent(scopes=(APP_STAGING,))], APP_PROD, NOW) is QueueHint.NO_AGENTS


def test_all_eligible_offline_is_no_agents() -> None:
    agents = [agent("a", seen_ago=None), agent("b", seen_ago=300)]
    assert queue_hint(agents, APP_PROD, NOW) is QueueHint.NO_AGENTS


def test_all_draining() -> None:
    agents = [agent("a", state=AgentState.DRAINING), agent("b", seen_ago=None)]
    assert queue_hint(agents, APP_PROD, NOW) is QueueHint.AGENTS_DRAINING


def test_all_saturated() -> None:
    agents = [agent("a", in_flight=2), agent("b", in_flight=5, max_concurrent=5)]
    assert queue_hint(agents, APP_PROD, NOW) is QueueHint.AGENTS_SATURATED


def test_draining_and_saturated_mix_says_saturated() -> None:
    agents = [agent("a", in_flight=2), agent("b", state=AgentState.DRAINING)]
    assert queue_hint(agents, APP_PROD, NOW) is QueueHint.AGENTS_SATURATED


def test_one_healthy_agent_means_no_hint() -> None:
    agents = [agent("a", in_flight=2), agent("b"), agent("c", scopes=(APP_STAGING,))]
    assert queue_hint(agents, APP_PROD, NOW) is None


def test_a_degraded_scope_is_not_eligible() -> None:
    degraded = replace(agent(), degraded_scopes=(APP_PROD,))
    assert queue_hint([degraded], APP_PROD, NOW) is QueueHint.NO_AGENTS
    assert not degraded.serves(APP_PROD)


def test_hint_values_are_the_wire_strings() -> None:
    assert [hint.value for hint in QueueHint] == [
        "no_agents",
        "agents_draining",
        "agents_saturated",
    ]


# --- rows and views --------------------------------------------------------------------------


def test_record_from_poll_with_status() -> None:
    status = AgentStatus(
        in_flight=1,
        in_flight_preflight=0,
        max_concurrent=2,
        draining=True,
        uptime_secs=33,
        active_jobs=(JOB,),
    )
    record = record_from_poll(
        "agent",
        (APP_PROD,),
        status,
        NOW,
        agent_id="eu-1",
        degraded_scopes=(APP_STAGING,),
        agent_version="0.2.0",
        agent_build="0.3.0",
    )
    assert (record.id, record.agent_id) == ("agent", "eu-1")
    assert record.status is AgentState.DRAINING
    assert (record.in_flight, record.max_concurrent, record.uptime_secs) == (1, 2, 33)
    assert record.active_jobs == (JOB,)
    assert record.last_seen_at == NOW
    assert record.degraded_scopes == (APP_STAGING,)


def test_record_from_poll_without_status_assumes_idle_four_slots() -> None:
    record = record_from_poll("agent", (APP_PROD,), None, NOW)
    assert record.status is AgentState.ACTIVE
    assert (record.in_flight, record.max_concurrent, record.uptime_secs) == (0, 4, 0)
    assert (record.id, record.agent_id) == ("agent", UNNAMED_AGENT)


@pytest.mark.parametrize("sent", [None, ""])
def test_an_agent_that_sends_no_agent_id_is_the_unnamed_agent_of_its_token(
    sent: str | None,
) -> None:
    record = record_from_poll("agent", (APP_PROD,), None, NOW, agent_id=sent)
    assert record.agent_id == UNNAMED_AGENT == ""


def named(agent_id: str, *scopes: Scope) -> AgentRecord:
    return record_from_poll("agent", scopes, None, NOW, agent_id=agent_id)


def test_a_call_naming_its_agent_speaks_for_that_agent_alone() -> None:
    prod, staging = named("a", APP_PROD), named("b", APP_STAGING)
    assert speaking_agents((prod, staging), "b") == (staging,)
    assert speaking_agents((prod, staging), "c") == ()
    assert not advertises(speaking_agents((prod, staging), "b"), APP_PROD)


def test_a_call_naming_no_agent_speaks_for_every_agent_of_its_token() -> None:
    prod, staging = named("a", APP_PROD), named("b", APP_STAGING)
    everyone = speaking_agents((prod, staging), None)
    assert everyone == (prod, staging)
    assert advertises(everyone, APP_PROD) and advertises(everyone, APP_STAGING)
    assert not advertises(everyone, Scope("billing", "production"))


def test_agent_view_online() -> None:
    view = agent_view(agent(in_flight=1, seen_ago=3.7), NOW)
    assert view.status is DerivedStatus.HEALTHY
    assert view.last_poll_ago_secs == 3
    assert view.uptime_secs == 120
    assert view.active_jobs == (JOB,)
    assert view.scopes == (APP_PROD,)


def test_agent_view_offline_blanks_load() -> None:
    view = agent_view(agent(in_flight=1, seen_ago=90), NOW)
    assert view.status is DerivedStatus.OFFLINE
    assert view.last_poll_ago_secs == 90
    assert view.uptime_secs == 0
    assert view.active_jobs == ()
    never = agent_view(agent(seen_ago=None), NOW)
    assert never.last_poll_ago_secs == 9999
