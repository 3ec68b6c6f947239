"""Scoped policy matching: the most specific scope wins, and each scope appears once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from domain.server.policy_matching import resolve_scoped, scope_problems


@dataclass(frozen=True)
class P:
    database: str = "*"
    environment: str = "*"
    tag: str = ""


@pytest.mark.parametrize(
    ("database", "environment", "expected"),
    [
        ("app", "production", "db+env"),
        ("other", "production", "env"),
        ("app", "staging", "db"),
        ("other", "staging", "any"),
    ],
)
def test_the_most_specific_matching_scope_wins(
    database: str, environment: str, expected: str
) -> None:
    policies = [
        P(tag="any"),
        P(database="app", tag="db"),
        P(environment="production", tag="env"),
        P("app", "production", tag="db+env"),
    ]
    chosen = resolve_scoped(policies, database, environment)
    assert chosen is not None and chosen.tag == expected


def test_an_exact_environment_outranks_an_exact_database() -> None:
    policies = [P(database="app", tag="db"), P(environment="production", tag="env")]
    chosen = resolve_scoped(policies, "app", "production")
    assert chosen is not None and chosen.tag == "env"


def test_a_tie_goes_to_the_first_entry() -> None:
    chosen = resolve_scoped([P(tag="first"), P(tag="second")], "app", "production")
    assert chosen is not None and chosen.tag == "first"


def test_no_matching_scope_resolves_to_none() -> None:
    assert resolve_scoped([P("app", "production")], "app", "staging") is None
    assert resolve_scoped([], "app", "production") is None


def test_a_repeated_scope_is_a_problem_naming_the_first_entry() -> None:
    problems = scope_problems([P("app"), P("app")], ("sql_review",))
    assert [p.key for p in problems] == [("sql_review", 1)]
    assert "sql_review[0]" in problems[0].message
    assert "never apply" in problems[0].message


def test_invalid_scope_names_are_problems_at_their_field() -> None:
    problems = scope_problems([P("bad name", "prod/uction")], ("sql_review",))
    assert [p.key for p in problems] == [
        ("sql_review", 0, "database"),
        ("sql_review", 0, "environment"),
    ]


def test_wildcards_and_distinct_scopes_are_fine() -> None:
    assert scope_problems([P(), P("app"), P(environment="production")], ("x",)) == []
