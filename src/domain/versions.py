"""Protocol versions and the server's version gate (agent-protocol.md §3.2 step 5)."""

from __future__ import annotations

#: The dbward protocol this agent speaks; dbward 0.2 servers refuse work to older agents.
AGENT_PROTOCOL_VERSION = "0.2.0"


def version_tuple(version: str) -> tuple[int, ...]:
    """Numeric components of a dotted version; pre-release parts are dropped like the reference."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if digits == "" or digits != piece:
            if digits:
                parts.append(int(digits))
            break
        parts.append(int(digits))
    return tuple(parts)


def version_lt(left: str, right: str) -> bool:
    """True when `left` is an older version than `right`."""
    return version_tuple(left) < version_tuple(right)
