"""What the work store's repositories share: the session's connection and the conversions
between record values and the portable columns.

Portable SQL only (SQLite and PostgreSQL share every statement): JSON as TEXT, timestamps
as fixed-width TEXT (`domain.shared.timestamps`, so string order is time order), and every
status change a conditional `UPDATE … WHERE status IN (…)` whose rowcount says who won.
Inserts that may collide run in a savepoint, so a lost race does not spoil the caller's
transaction (PostgreSQL aborts the whole transaction on an error otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, bindparam, false, or_
from sqlalchemy.exc import IntegrityError

from domain.server.request_lifecycle import RequestStatus
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp, parse_timestamp

_R = TypeVar("_R")


class SqlRepository:
    """Runs in the caller's connection and transaction (one `StoreSession`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _first(
        self,
        query: Select[Any],
        record: Callable[[Row[Any]], _R],
        params: dict[str, Any] | None = None,
    ) -> _R | None:
        row = self._conn.execute(query, params).first()
        return None if row is None else record(row)

    def _all(
        self,
        query: Select[Any],
        record: Callable[[Row[Any]], _R],
        params: dict[str, Any] | None = None,
    ) -> list[_R]:
        return [record(row) for row in self._conn.execute(query, params)]

    def _insert_or_conflict(self, statement: Any, values: dict[str, Any] | None = None) -> bool:
        """Run an INSERT (with `values` as its parameters) in a savepoint; False when a
        constraint refused it."""
        try:
            with self._conn.begin_nested():
                self._conn.execute(statement, values)
        except IntegrityError:
            return False
        return True


def optional_timestamp(moment: datetime | None) -> str | None:
    """A nullable timestamp column's value."""
    return None if moment is None else format_timestamp(moment)


def parse_optional_timestamp(stored: str | None) -> datetime | None:
    return None if stored is None else parse_timestamp(stored)


def database_id(scope: Scope) -> str:
    """`databases.id` and `requests.database_id`: "<database>:<environment>"."""
    return f"{scope.database}:{scope.environment}"


def scope_filter(
    database: ColumnElement[Any], environment: ColumnElement[Any], scopes: Collection[Scope]
) -> ColumnElement[bool]:
    """`(database = ? AND environment = ?) OR …`; false for no scopes."""
    if not scopes:
        return false()
    return or_(*(and_(database == s.database, environment == s.environment) for s in scopes))


def bound_scope_filter(
    database: ColumnElement[Any], environment: ColumnElement[Any], count: int
) -> ColumnElement[bool]:
    """`scope_filter` for `count` scopes with bound parameters (`_db0`, `_env0`, …), for
    statements built once per scope count; `scope_params` gives their values."""
    if count == 0:
        return false()
    return or_(
        *(
            and_(database == bindparam(f"_db{n}"), environment == bindparam(f"_env{n}"))
            for n in range(count)
        )
    )


def scope_params(scopes: Collection[Scope]) -> dict[str, str]:
    """The parameters of a `bound_scope_filter` for `scopes`, in order."""
    params: dict[str, str] = {}
    for n, scope in enumerate(scopes):
        params[f"_db{n}"] = scope.database
        params[f"_env{n}"] = scope.environment
    return params


def status_values(statuses: Iterable[RequestStatus]) -> list[str]:
    """Request statuses as an `IN (…)` list, sorted so the statement text is stable."""
    return sorted(status.value for status in statuses)
