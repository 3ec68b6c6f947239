"""Operations an agent can perform, with the canonical wire names of dbward 0.2.

The server accepts only the canonical names in a poll (an alias there is a 422), so the
config rejects aliases early; claim responses are parsed leniently, as dbward 0.2 does.
"""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    EXECUTE_SELECT = "execute_select"
    EXECUTE_DML = "execute_dml"
    MIGRATE_UP = "migrate_up"
    MIGRATE_DOWN = "migrate_down"
    MIGRATE_STATUS = "migrate_status"
    MIGRATE_REPAIR = "migrate_repair"

    @property
    def is_migration(self) -> bool:
        """Migrations are never killed mid-statement (they may leave DDL half done)."""
        return self in _MIGRATIONS

    @property
    def mutates_schema(self) -> bool:
        """Operations whose success changes the schema, so a schema sync follows them."""
        return self in (Operation.MIGRATE_UP, Operation.MIGRATE_DOWN)

    @property
    def signs_canonical_detail(self) -> bool:
        """Operations whose detail is JSON hashed in canonical form (docs/protocol.md §4.1)."""
        return self in (Operation.MIGRATE_UP, Operation.MIGRATE_DOWN, Operation.MIGRATE_REPAIR)


_MIGRATIONS = frozenset(
    {
        Operation.MIGRATE_UP,
        Operation.MIGRATE_DOWN,
        Operation.MIGRATE_STATUS,
        Operation.MIGRATE_REPAIR,
    }
)

#: Advertised when the config sets no `operations` (dbward 0.2's default 5: no repair).
DEFAULT_OPERATIONS: tuple[Operation, ...] = (
    Operation.EXECUTE_SELECT,
    Operation.EXECUTE_DML,
    Operation.MIGRATE_UP,
    Operation.MIGRATE_DOWN,
    Operation.MIGRATE_STATUS,
)

#: Names dbward 0.2 accepts in a claim response besides the canonical ones.
OPERATION_ALIASES: dict[str, Operation] = {
    "execute_query": Operation.EXECUTE_SELECT,
    "execute": Operation.EXECUTE_SELECT,
    "query": Operation.EXECUTE_SELECT,
}


class UnsupportedOperationError(ValueError):
    """An operation name that is neither canonical nor a known alias."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unsupported operation: {name}")
        self.name = name


def parse_operation(name: str) -> Operation:
    """Parse a canonical name or an alias (claim responses may carry either)."""
    try:
        return Operation(name)
    except ValueError:
        pass
    alias = OPERATION_ALIASES.get(name)
    if alias is None:
        raise UnsupportedOperationError(name)
    return alias


def parse_canonical_operation(name: str) -> Operation:
    """Parse a canonical name only: what a poll may advertise."""
    try:
        return Operation(name)
    except ValueError:
        raise UnsupportedOperationError(name) from None
