"""Protocol versions and the server's version gate (agent-protocol.md §3.2 step 5)."""

from __future__ import annotations

#: The dbward protocol this agent speaks; dbward 0.2 servers refuse work to older agents.
AGENT_PROTOCOL_VERSION = "0.2.0"


def version_tuple(version: str) -> tuple[int, ...]:
    """Numeric components of a dotted version, as the reference compares them.

    Components that are not plain numbers are dropped, so `0.2.0-rc1` is `(0, 2)` and
    sorts before `0.2.0`: a release candidate is older than its release.
    """
    return tuple(
        int(piece) for piece in version.strip().split(".") if piece.isascii() and piece.isdigit()
    )


def version_lt(left: str, right: str) -> bool:
    """True when `left` is an older version than `right`."""
    return version_tuple(left) < version_tuple(right)
