"""How a non-workflow policy is chosen for a (database, environment), and the checks on scopes.

docs/server.md §3: execution, result and SQL review policies all match by specificity:
environment exact = 2, database exact = 1, the highest wins and ties go to the first.
Two different scopes never tie for one request ((db, env) 3, (*, env) 2, (db, *) 1,
(*, *) 0), so a tie means the same scope twice, which `scope_problems` rejects: the later
entry would never apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from domain.server.workflows import (
    WILDCARD,
    KeyPath,
    ValidationProblem,
    format_key,
    scope_name_problem,
)

__all__ = ["resolve_scoped", "scope_problems"]


class _Scoped(Protocol):
    @property
    def database(self) -> str: ...

    @property
    def environment(self) -> str: ...


_P = TypeVar("_P", bound=_Scoped)


def resolve_scoped(policies: Sequence[_P], database: str, environment: str) -> _P | None:
    """Highest specificity (environment exact 2, database exact 1); ties go to the first."""
    best: _P | None = None
    best_score = -1
    for policy in policies:
        if policy.database not in (WILDCARD, database):
            continue
        if policy.environment not in (WILDCARD, environment):
            continue
        score = (2 if policy.environment != WILDCARD else 0) + (
            1 if policy.database != WILDCARD else 0
        )
        if score > best_score:
            best, best_score = policy, score
    return best


def scope_problems(policies: Sequence[_Scoped], key: KeyPath) -> list[ValidationProblem]:
    """Names valid (or `*`), and each scope once: a repeated scope would never apply."""
    problems: list[ValidationProblem] = []
    first: dict[tuple[str, str], int] = {}
    for index, policy in enumerate(policies):
        for field in ("database", "environment"):
            problem = scope_name_problem(field, getattr(policy, field))
            if problem:
                problems.append(ValidationProblem((*key, index, field), problem))
        scope = (policy.database, policy.environment)
        earlier = first.setdefault(scope, index)
        if earlier != index:
            problems.append(
                ValidationProblem(
                    (*key, index),
                    f"same database {scope[0]!r} and environment {scope[1]!r} as "
                    f"{format_key((*key, earlier))}, so it would never apply; merge the two",
                )
            )
    return problems
