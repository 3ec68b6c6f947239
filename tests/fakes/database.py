"""A scriptable in-memory database implementing DatabasePort."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from application.agent.cancellation import CancelToken
from domain.agent.errors import DatabaseError, QueryCancelled
from domain.agent.result_limits import ResultLimits
from domain.shared.jobs import ExecutionOutput
from domain.shared.operations import Operation


class FakeDatabase:
    """Answers queries from a script; can refuse connections, fail, or hang until cancelled.

    - `connect_errors`: errors raised by the next `connect` calls, in order.
    - `rows`: rows returned by selects (as JSON objects); `dml_rows`: by DML plans.
    - `fail_next`: an error the next execution raises.
    - Executed statements are recorded joined with ";\n", as dbward 0.2 sends them.
    - `hang`: executions block until `release` is set or the cancel token fires.
    """

    def __init__(self, dialect: str = "postgresql") -> None:
        self._dialect = dialect
        self._lock = threading.Lock()
        self.connect_errors: deque[Exception] = deque()
        self.connects = 0
        self.connected = False
        self.closed = False
        self.rows: list[dict[str, Any]] = [{"n": 1}]
        self.rows_affected = 1
        #: Rows a DML plan returns (RETURNING); None: it returns none.
        self.dml_rows: list[dict[str, Any]] | None = None
        self.fail_next: Exception | None = None
        self.hang = False
        self.release = threading.Event()
        self.running = threading.Event()
        self.kills = 0
        self.executed: list[tuple[str, str, int]] = []
        self.explained: list[str] = []
        self.plan: Any = [{"Plan": {"Node Type": "Result"}}]
        self.schema: dict[str, Any] = {"tables": []}
        self.schema_error: Exception | None = None
        self.migration_output = '{"applied":["1"]}'
        self.last_limits: ResultLimits | None = None

    @property
    def dialect(self) -> str:
        return self._dialect

    def connect(self, timeout_secs: float) -> None:
        with self._lock:
            self.connects += 1
            if self.connect_errors:
                self.connected = False
                raise self.connect_errors.popleft()
            self.connected = True

    def _run(self, kind: str, sql: str, timeout_secs: int, cancel: CancelToken | None) -> None:
        with self._lock:
            self.executed.append((kind, sql, timeout_secs))
            error, self.fail_next = self.fail_next, None
        if error is not None:
            raise error
        if not self.hang:
            return
        self.running.set()
        killed = threading.Event()

        def kill() -> None:
            with self._lock:
                self.kills += 1
            killed.set()

        unregister = cancel.on_cancel(kill) if cancel is not None and kind != "migrate" else None
        try:
            while not self.release.is_set():
                if killed.wait(0.01):
                    raise QueryCancelled("query cancelled")
                if kind == "migrate" and cancel is not None and cancel.cancelled:
                    # Migrations are never killed; they notice between versions.
                    continue
        finally:
            if unregister is not None:
                unregister()
            self.running.clear()

    def execute_select(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        self.last_limits = limits
        self._run("select", ";\n".join(statements), timeout_secs, cancel)
        rows = self.rows[: limits.max_rows]
        truncated = len(self.rows) > limits.max_rows
        data = {
            "rows": rows,
            "truncated": truncated,
            "truncation_reason": f"row limit reached ({limits.max_rows})" if truncated else None,
        }
        return ExecutionOutput(result_data=json.dumps(data), truncated=truncated)

    def execute_dml(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        self.last_limits = limits
        self._run("dml", ";\n".join(statements), timeout_secs, cancel)
        if self.dml_rows is None:
            return ExecutionOutput(
                result_data=json.dumps({"rows_affected": self.rows_affected}),
                rows_affected=self.rows_affected,
            )
        rows = self.dml_rows[: limits.max_rows]
        truncated = len(self.dml_rows) > limits.max_rows
        data = {
            "rows_affected": self.rows_affected,
            "rows": rows,
            "truncated": truncated,
            "truncation_reason": f"row limit reached ({limits.max_rows})" if truncated else None,
        }
        return ExecutionOutput(
            result_data=json.dumps(data), rows_affected=self.rows_affected, truncated=truncated
        )

    def run_migration(
        self, operation: Operation, detail: str, timeout_secs: int, cancel: CancelToken
    ) -> ExecutionOutput:
        self._run("migrate", f"{operation.value}:{detail}", timeout_secs, cancel)
        return ExecutionOutput(result_data=self.migration_output)

    def explain(self, sql: str, timeout_secs: int) -> Any:
        with self._lock:
            self.explained.append(sql)
            error, self.fail_next = self.fail_next, None
        if error is not None:
            raise error
        return self.plan

    def collect_schema(self) -> dict[str, Any]:
        if self.schema_error is not None:
            raise self.schema_error
        return self.schema

    def close(self) -> None:
        self.closed = True


class FakeDatabaseFactory:
    """Hands out one FakeDatabase per URL, created on demand, so tests can script them."""

    def __init__(self) -> None:
        self.databases: dict[str, FakeDatabase] = {}

    def __call__(self, url: str) -> FakeDatabase:
        if url not in self.databases:
            dialect = "mysql" if url.startswith("mysql://") else "postgresql"
            self.databases[url] = FakeDatabase(dialect)
        return self.databases[url]


def connectivity_error(message: str = "server closed the connection unexpectedly") -> DatabaseError:
    return DatabaseError(message, connectivity=True)
