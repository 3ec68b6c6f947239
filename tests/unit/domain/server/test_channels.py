"""Channels (docs/mcp.md): MCP refuses break-glass; unknown channel names are a 400."""

from __future__ import annotations

import pytest

from domain.server.channels import Channel, parse_channel, refuse_unoffered_create
from domain.server.errors import Validation


@pytest.mark.parametrize(("emergency", "allow_ddl"), [(True, False), (True, True), (False, True)])
def test_break_glass_is_refused_from_the_mcp_channel(emergency: bool, allow_ddl: bool) -> None:
    with pytest.raises(Validation) as refused:
        refuse_unoffered_create(Channel.MCP, emergency=emergency, allow_ddl=allow_ddl)
    assert refused.value.code == "channel.not_offered"


def test_the_plain_api_and_ordinary_mcp_requests_pass() -> None:
    refuse_unoffered_create(None, emergency=True, allow_ddl=True)
    refuse_unoffered_create(Channel.MCP, emergency=False, allow_ddl=False)


def test_channel_names_are_read_case_insensitively_and_unknown_ones_refused() -> None:
    assert parse_channel(" MCP ") is Channel.MCP
    with pytest.raises(Validation, match="unknown channel 'slack'"):
        parse_channel("slack")
