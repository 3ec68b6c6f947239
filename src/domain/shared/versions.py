"""Protocol versions and the order the version gate compares them in.

The server refuses work to an agent older than its `min_agent_version`, and the agent reads
the same gate from the other side; both must put versions in one order, or an agent the
server calls current would be told to upgrade (or the reverse). `version_lt` is that order.
"""

from __future__ import annotations

import re

#: The dbward protocol this agent speaks; dbward 0.2 servers refuse work to older agents.
AGENT_PROTOCOL_VERSION = "0.2.0"

_LEADING_DIGITS = re.compile(r"[0-9]+")

#: A numeric component: its digits without leading zeros, compared by (length, digits).
_Number = tuple[int, str]
#: A pre-release identifier: numbers sort before words, as in semantic versioning.
_Identifier = tuple[int, int, str]
#: Sorts like the version: numeric core, then release after pre-release, then identifiers.
VersionKey = tuple[tuple[_Number, ...], int, tuple[_Identifier, ...]]


def _number(digits: str) -> _Number:
    """A decimal number that compares by value without `int()`.

    Versions come from the network: a component of thousands of digits must compare, not
    raise (`int()` refuses more than 4300 digits) or cost quadratic time.
    """
    significant = digits.lstrip("0")
    return (len(significant), significant)


def _identifier(text: str) -> _Identifier:
    if text.isascii() and text.isdigit():
        length, digits = _number(text)
        return (0, length, digits)
    return (1, 0, text)


def version_key(version: str) -> VersionKey:
    """The sort key of a version such as `0.2.0`, `0.10` or `0.2.1-rc1`.

    * The numeric core is the part before the first `-` (and before any `+build` note,
      which does not count). Each dot component counts as its leading digits (`0rc1` is 0,
      a component without digits is 0), and trailing zero components are dropped, so a
      missing component counts as 0: `0.2` and `0.2.0` are the same version.
    * Components compare as numbers, so `0.10.0` is newer than `0.9.0`.
    * A `-suffix` marks a pre-release, older than the release of the same core
      (`0.2.0-rc1` < `0.2.0`) but newer than any older core (`0.2.1-rc1` > `0.2.0`).
      Two pre-releases of one core compare by their dot-separated identifiers, numbers by
      value and before words.
    """
    text = version.strip().split("+", 1)[0]
    core, dash, suffix = text.partition("-")
    numbers = [
        _number(match.group()) if (match := _LEADING_DIGITS.match(part)) else (0, "")
        for part in core.split(".")
    ]
    while numbers and numbers[-1] == (0, ""):
        numbers.pop()
    if not dash:
        return (tuple(numbers), 1, ())
    return (tuple(numbers), 0, tuple(_identifier(part) for part in suffix.split(".")))


def version_lt(left: str, right: str) -> bool:
    """True when `left` is an older version than `right` (see `version_key` for the order)."""
    return version_key(left) < version_key(right)
