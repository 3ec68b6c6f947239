"""Scopes (database, environment) and the capabilities an agent advertises."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.shared.operations import Operation

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class InvalidScopeNameError(ValueError):
    """A database or environment name the server would refuse (400 at the first poll)."""


def validate_scope_name(kind: str, name: str) -> str:
    """Check a name against the server's rule `^[a-z][a-z0-9_-]*$`, 1 to 63 characters."""
    if not _NAME.match(name):
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
