"""The request path's statements, run on the DBAPI cursor with SQLAlchemy's own compilation.

SQLAlchemy Core spends 30-60 µs of Python on each statement beyond what the driver does
(an execution context, result metadata, events, parameter coercion): on SQLite that is
several times the statement itself, and one request runs about 35 of them, the same ones
every time (docs/performance.md, change 24). The store marks those with `prepared(...)`
where it builds them, once, at module level, with bound parameters only; then
`PreparedConnection.execute` and `.scalar` run a marked statement as SQLAlchemy would at
the DBAPI level, without the machinery around it:

* the SQL text and the parameter order are SQLAlchemy's compilation, made once per
  dialect (and, for INSERT and UPDATE, per set of parameter keys, as SQLAlchemy does);
  expanding `IN` lists are rendered by SQLAlchemy's `construct_expanded_state`;
* parameters go through the compiled statement's `construct_params` (a missing one is
  the same error) and its bind processors, result values through the result columns'
  processors, so values are exactly what the ordinary path gives;
* `before_cursor_execute` / `after_cursor_execute` listeners still hear every statement
  (the SQL log of `bench/_load.py`, tests that count statements), and a DBAPI error goes
  through the connection's own handler: callers catch the same `sqlalchemy.exc` types
  (a unique violation is an `IntegrityError`) and a lost connection is invalidated.

Everything else takes SQLAlchemy's path unchanged: an unmarked statement, several
parameter sets, execution options, a statement outside a transaction, and a statement
whose compilation needs more than this (Python-side column defaults, literal-execute
parameters, result columns that are not plain names).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Dialect, Executable
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["PreparedConnection", "PreparedResult", "prepared"]

_S = TypeVar("_S", bound=Executable)

#: The marked statements by `id`. Holding them keeps their ids from being reused.
_MARKED: dict[int, Executable] = {}


def prepared(statement: _S) -> _S:
    """Mark a statement built once (module level, bound parameters only) for the DBAPI path."""
    _MARKED[id(statement)] = statement
    return statement


class PreparedResult:
    """The part of `CursorResult` the store's repositories use, over rows fetched at once.

    Marked statements return at most a handful of rows (a primary-key lookup, a poll's
    `LIMIT`), so the rows are fetched when the statement runs and the cursor closed.
    """

    __slots__ = ("_next", "_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return iter(rows)

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    def fetchall(self) -> list[Any]:
        return list(self)

    def all(self) -> list[Any]:
        return list(self)

    def first(self) -> Any:
        row = self.fetchone()
        self._next = len(self._rows)
        return row

    def one_or_none(self) -> Any:
        rows = self.all()
        if len(rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return rows[0] if rows else None

    def one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise NoResultFound("No row was found when one was required")
        return row

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        return self.one()[0]


class _Row(tuple[Any, ...]):
    """A row: by position, by attribute (a subclass per statement), `_mapping` by name."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


def _row_type(keys: Sequence[str]) -> type[_Row] | None:
    """A `_Row` subclass naming `keys`; None when they are not distinct plain names."""
    if len(set(keys)) != len(keys) or any(
        not key.isidentifier() or key.startswith("_") or hasattr(_Row, key) for key in keys
    ):
        return None
    namespace: dict[str, Any] = {"__slots__": (), "_fields": tuple(keys)}
    for index, key in enumerate(keys):
        namespace[key] = property(itemgetter(index))
    return type("PreparedRow", (_Row,), namespace)


_Processor = Callable[[Any], Any]


class _Plan:
    """One marked statement compiled for one dialect (and one set of parameter keys)."""

    def __init__(
        self,
        compiled: SQLCompiler,
        bind_processors: Mapping[str, _Processor],
        row_type: type[_Row] | None,
    ) -> None:
        self.compiled = compiled
        self.expanding = bool(compiled.post_compile_params)
        self.bind_processors = bind_processors
        self.row_type = row_type
        #: Per result column, its processor or None; known at the first run (a driver's
        #: column types come with the cursor's description).
        self.result_processors: list[_Processor | None] | None = None

    def sql_and_parameters(self, params: Mapping[str, Any]) -> tuple[str, Any]:
        compiled = self.compiled
        processors: Mapping[str, Any]
        if self.expanding:
            state = compiled.construct_expanded_state(params)
            sql, values, order, processors = (
                state.statement,
                state.parameters,
                state.positiontup,
                state.processors,
            )
        else:
            sql, values, order, processors = (
                compiled.string,
                compiled.construct_params(params),
                compiled.positiontup,
                self.bind_processors,
            )
        if processors:
            values = {
                key: processors[key](value) if key in processors else value
                for key, value in values.items()
            }
        if compiled.positional:
            assert order is not None
            return sql, tuple(values[key] for key in order)
        return sql, values

    def rows(self, cursor: Any, dialect: Dialect) -> list[Any]:
        if self.row_type is None or cursor.description is None:
            return []
        fetched = cursor.fetchall()
        processors = self.result_processors
        if processors is None:
            columns = self.compiled._result_columns
            processors = [
                column.type._cached_result_processor(dialect, description[1])
                for column, description in zip(columns, cursor.description, strict=True)
            ]
            self.result_processors = processors
        make = self.row_type
        if not any(processors):
            return [make(row) for row in fetched]
        return [
            make(
                value if processor is None else processor(value)
                for processor, value in zip(processors, row, strict=True)
            )
            for row in fetched
        ]


#: Plans per dialect object (so a disposed engine's plans go with its dialect).
_PLANS: weakref.WeakKeyDictionary[Dialect, dict[tuple[int, tuple[str, ...]], _Plan | None]] = (
    weakref.WeakKeyDictionary()
)


def _plan(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan | None:
    plans = _PLANS.get(dialect)
    if plans is None:
        plans = _PLANS[dialect] = {}
    key = (id(statement), keys)
    if key in plans:
        return plans[key]
    plan = plans[key] = _compile(statement, dialect, keys)
    return plan


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    if not isinstance(compiled, SQLCompiler):
        return None
    if compiled.insert_prefetch or compiled.update_prefetch or compiled.literal_execute_params:
        return None
    bind_processors: dict[str, _Processor] = {}
    for name, processor in compiled._bind_processors.items():
        if not callable(processor):  # a tuple parameter's processors, one per element
            return None
        bind_processors[name] = processor
    row_type: type[_Row] | None = None
    if compiled._result_columns:
        row_type = _row_type([column.keyname for column in compiled._result_columns])
        if row_type is None:
            return None
    return _Plan(compiled, bind_processors, row_type)


class PreparedConnection(Connection):
    """A `Connection` that runs `prepared` statements on the DBAPI cursor (module docs)."""

    def execute(
        self,
        statement: Executable,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> CursorResult[Any]:
        if (
            id(statement) in _MARKED
            and execution_options is None
            and (parameters is None or isinstance(parameters, dict))
            and self.in_transaction()
        ):
            params: dict[str, Any] = parameters or {}
            keys = tuple(sorted(params)) if statement.is_dml else ()
            plan = _plan(statement, self.dialect, keys)
            if plan is not None:
                return cast("CursorResult[Any]", self._run(plan, params))
        return super().execute(statement, parameters, execution_options=execution_options)

    def scalar(
        self,
        statement: Executable,
        parameters: Any = None,
        *,
        execution_options: Any = None,
    ) -> Any:
        if id(statement) in _MARKED:
            return self.execute(statement, parameters, execution_options=execution_options).scalar()
        return super().scalar(statement, parameters, execution_options=execution_options)

    def execute_text(self, sql: str) -> None:
        """A statement without parameters or rows (the SQLite store's `BEGIN IMMEDIATE`),
        on the DBAPI cursor like a prepared one."""
        self._run_on_cursor(sql, (), None)

    def _run(self, plan: _Plan, params: Mapping[str, Any]) -> PreparedResult:
        sql, values = plan.sql_and_parameters(params)
        result = self._run_on_cursor(sql, values, plan)
        assert result is not None
        return result

    def _run_on_cursor(self, sql: str, values: Any, plan: _Plan | None) -> PreparedResult | None:
        cursor = self.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            events = self._has_events or self.engine._has_events
            if events:
                self.dispatch.before_cursor_execute(self, cursor, sql, values, None, False)
            cursor.execute(sql, values)
            if events:
                self.dispatch.after_cursor_execute(self, cursor, sql, values, None, False)
            result = (
                None
                if plan is None
                else PreparedResult(plan.rows(cursor, self.dialect), cursor.rowcount)
            )
        except BaseException as error:
            self._handle_dbapi_exception(error, sql, values, cursor, None)
        cursor.close()
        return result
