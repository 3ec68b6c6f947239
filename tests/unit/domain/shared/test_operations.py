"""Operations: canonical names, the aliases the protocol accepts, the default set."""

from __future__ import annotations

import pytest

from domain.shared.operations import (
    DEFAULT_OPERATIONS,
    Operation,
    UnsupportedOperationError,
    parse_canonical_operation,
    parse_operation,
)


def test_operations_have_the_canonical_wire_names() -> None:
    assert [op.value for op in Operation] == [
        "execute_select",
        "execute_dml",
        "migrate_up",
        "migrate_down",
        "migrate_status",
        "migrate_repair",
    ]
    assert all(parse_operation(op.value) is op for op in Operation)


@pytest.mark.parametrize("alias", ["execute_query", "execute", "query"])
def test_operation_aliases_parse_as_execute_select(alias: str) -> None:
    assert parse_operation(alias) is Operation.EXECUTE_SELECT


def test_unknown_operation_is_an_error_naming_it() -> None:
    with pytest.raises(UnsupportedOperationError, match=r"^unsupported operation: drop_all$"):
        parse_operation("drop_all")


def test_aliases_are_refused_where_only_canonical_names_are_allowed() -> None:
    with pytest.raises(UnsupportedOperationError):
        parse_canonical_operation("execute_query")


def test_default_operations_are_the_standard_five_without_repair() -> None:
    assert Operation.MIGRATE_REPAIR not in DEFAULT_OPERATIONS
    assert len(DEFAULT_OPERATIONS) == 5


def test_every_migrate_operation_is_a_migration_but_only_up_and_down_change_the_schema() -> None:
    migrations = {op for op in Operation if op.is_migration}
    assert migrations == {
        Operation.MIGRATE_UP,
        Operation.MIGRATE_DOWN,
        Operation.MIGRATE_STATUS,
        Operation.MIGRATE_REPAIR,
    }
    assert {op for op in Operation if op.mutates_schema} == {
        Operation.MIGRATE_UP,
        Operation.MIGRATE_DOWN,
    }
