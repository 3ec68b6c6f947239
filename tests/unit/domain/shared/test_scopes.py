"""The one rule for database and environment names, and every door a name comes in by."""

from __future__ import annotations

import pytest

from domain.server.agent_registry import validate_poll_scopes
from domain.server.errors import Validation
from domain.server.rbac import define_role
from domain.server.workflows import scope_name_problem
from domain.shared.scopes import (
    InvalidScopeNameError,
    Scope,
    is_valid_scope_name,
    validate_scope_name,
)

VALID = ["app", "a", "app_2-prod", "z9", "a" * 63]
INVALID = [
    "",
    "App",
    "1app",
    "_app",
    "-app",
    "app.prod",
    "app prod",
    "*",
    "a" * 64,
    "app\n",  # `$` in re.match takes a trailing newline; the rule does not
    "\napp",
    "app\r",
    "appé",
    "\uff41pp",  # a full-width letter
]


@pytest.mark.parametrize("name", VALID)
def test_valid_scope_names_are_accepted(name: str) -> None:
    assert is_valid_scope_name(name)
    assert validate_scope_name("database", name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_scope_names_are_refused_with_the_kind_named(name: str) -> None:
    assert not is_valid_scope_name(name)
    with pytest.raises(InvalidScopeNameError, match="invalid environment name"):
        validate_scope_name("environment", name)


@pytest.mark.parametrize("name", VALID + INVALID)
def test_every_door_applies_the_one_rule(name: str) -> None:
    """Workflows and requests, roles and polls accept exactly the names the rule accepts."""
    valid = is_valid_scope_name(name)
    assert (scope_name_problem("database", name, wildcard=False) is None) is valid
    assert (scope_name_problem("environment", name) is None) is (valid or name == "*")
    try:
        define_role("reader", [], databases=[name], environments=["*"])
        role_accepted = True
    except Validation:
        role_accepted = False
    assert role_accepted is (valid or name == "*")
    for pair in ((name, "production"), ("app", name)):
        try:
            validate_poll_scopes([pair])
            poll_accepted = True
        except Validation:
            poll_accepted = False
        assert poll_accepted is valid


def test_scope_prints_as_database_slash_environment() -> None:
    assert str(Scope("app", "production")) == "app/production"
