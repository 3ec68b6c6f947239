"""The public key agents verify execution tokens with."""

from __future__ import annotations

import pytest

from domain.server.errors import Forbidden
from tests.unit.application.server.test_requests_and_claims import ADMIN, AGENT, ServerHarness


def test_the_public_key_is_the_signing_keys(server: ServerHarness) -> None:
    assert server.agents.get_public_key.get(AGENT) == server.signer.public_key_hex()


def test_non_agents_cannot_fetch_the_public_key(server: ServerHarness) -> None:
    with pytest.raises(Forbidden):
        server.agents.get_public_key.get(ADMIN)
