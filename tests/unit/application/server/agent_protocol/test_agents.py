"""The agent listing: the registry as of now, for those who may see it."""

from __future__ import annotations

import pytest

from domain.server.errors import Forbidden
from tests.unit.application.server.test_requests_and_claims import (
    ADMIN,
    ALICE,
    PROD,
    STAGING,
    ServerHarness,
)


def test_agents_listing(server: ServerHarness) -> None:
    server.poll(agent_build="9.9.9")
    (listing,) = server.agents.list_agents.list(ADMIN)
    assert listing.view.status.value == "healthy"
    assert listing.agent_build == "9.9.9"
    assert listing.view.scopes == (PROD,)
    with pytest.raises(Forbidden):
        server.agents.list_agents.list(ALICE)
    server.clock.advance(61)
    assert server.agents.list_agents.list(ADMIN)[0].view.status.value == "offline"


def test_agents_sharing_a_token_are_listed_each_with_its_own_scopes_and_health(
    server: ServerHarness,
) -> None:
    server.poll(agent_id="replica-a", scopes=(("app", "production"),))
    server.clock.advance(61)
    server.poll(agent_id="replica-b", scopes=(("app", "staging"),))

    listings = server.agents.list_agents.list(ADMIN)

    assert [
        (item.view.id, item.view.agent_id, item.view.scopes, item.view.status.value)
        for item in listings
    ] == [
        ("agent", "replica-a", (PROD,), "offline"),
        ("agent", "replica-b", (STAGING,), "healthy"),
    ]
