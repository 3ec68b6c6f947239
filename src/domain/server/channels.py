"""Channels: the client surface a call came through, when it is not the plain API.

A call made by dbward's MCP tools (docs/mcp.md) carries the channel `mcp`. Two rules hang
on it: every audit event the call writes records the channel, and a channel may refuse
what it does not offer. MCP offers no break-glass: an assistant must never reach for an
emergency bypass of the approval workflow, so a create with `emergency` or `allow_ddl`
from that channel is refused whoever holds the token.
"""

from __future__ import annotations

from enum import StrEnum

from domain.server.errors import Validation

__all__ = ["Channel", "parse_channel", "refuse_unoffered_create"]


class Channel(StrEnum):
    MCP = "mcp"


def parse_channel(text: str) -> Channel:
    """A channel name as a client sent it; an unknown one is a 400 naming the known ones."""
    try:
        return Channel(text.strip().lower())
    except ValueError:
        known = ", ".join(channel.value for channel in Channel)
        raise Validation(f"unknown channel {text!r} (known: {known})") from None


def refuse_unoffered_create(channel: Channel | None, *, emergency: bool, allow_ddl: bool) -> None:
    """Break-glass (`emergency`, `allow_ddl`) is not offered through MCP."""
    if channel is Channel.MCP and (emergency or allow_ddl):
        raise Validation(
            "break-glass requests (emergency, allow_ddl) are not accepted through MCP; "
            "use the dbward CLI or API",
            code="channel.not_offered",
        )
