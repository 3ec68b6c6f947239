"""Scopes (database, environment) and the capabilities an agent advertises."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.shared.operations import Operation

#: 1 to 63 characters of a-z, 0-9, `_` and `-`, starting with a letter.
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


class InvalidScopeNameError(ValueError):
    """A database or environment name the server would refuse (400 at the first poll)."""


def is_valid_scope_name(name: str) -> bool:
    """The one rule for database and environment names, wherever a name enters.

    The agent's config, the server's config, roles, polls and new requests all check names
    here, so a name one of them accepts is never refused by another. The whole string must
    match: `re.match` with `$` would also take a name ending in a newline (`"app\n"`).
    """
    return _NAME.fullmatch(name) is not None


def validate_scope_name(kind: str, name: str) -> str:
    """`name` if `is_valid_scope_name`; otherwise an error naming the `kind` and the rule."""
    if not is_valid_scope_name(name):
        raise InvalidScopeNameError(
            f"invalid {kind} name {name!r}: use 1-63 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter"
        )
    return name


@dataclass(frozen=True, order=True)
class Scope:
    """One `[databases.<database>.<environment>]` entry: where a job may run."""

    database: str
    environment: str

    def __str__(self) -> str:
        return f"{self.database}/{self.environment}"


@dataclass(frozen=True)
class Capabilities:
    """What a poll advertises: the usable scopes and the operations this agent accepts."""

    scopes: tuple[Scope, ...]
    operations: tuple[Operation, ...]

    def accepts(self, scope: Scope, operation: Operation) -> bool:
        return scope in self.scopes and operation in self.operations
