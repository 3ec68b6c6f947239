"""Ports: what the agent's services need from the outside world, and nothing more.

Adapters implement these (httpx, psycopg, PyMySQL, the filesystem, the system clock,
`cryptography`); unit tests implement them with small hand-written fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from application.agent.cancellation import CancelToken
from domain.agent.result_limits import ResultLimits
from domain.shared.jobs import (
    ClaimedJob,
    ExecutionOutput,
    ExplainOutcome,
    HeartbeatReply,
    JobResult,
    PollRequest,
    PollResponse,
    SchemaReport,
)
from domain.shared.operations import Operation


class ServerPort(Protocol):
    """The dbward server's agent API (docs/protocol.md §3).

    Errors are raised as `domain.agent.errors` types: `ServerError` subclasses for HTTP error
    statuses, `ServerUnreachable` when no answer came, `MalformedServerResponse` for a
    2xx body that does not fit the protocol.
    """

    def fetch_public_key(self) -> str: ...

    def poll(self, request: PollRequest) -> PollResponse: ...

    def claim(self, request_id: str, lease_duration_secs: int) -> ClaimedJob: ...

    def heartbeat(self, execution_id: str) -> HeartbeatReply: ...

    def submit_result(self, execution_id: str, result: JobResult) -> None: ...

    def submit_schema(self, report: SchemaReport) -> None: ...

    def claim_dry_run(self, job_id: str) -> str: ...

    def submit_dry_run_result(
        self, job_id: str, claim_token: str, outcome: ExplainOutcome
    ) -> None: ...

    def submit_preflight_result(
        self, job_id: str, claim_token: str, outcome: ExplainOutcome
    ) -> None: ...

    def close(self) -> None: ...


class DatabasePort(Protocol):
    """One target database (`[databases.<db>.<env>]`).

    Every call may run on a worker thread; `cancel` may be fired from another thread, and
    the adapter must then stop the statement on the database itself (never for migrations).
    Errors are `domain.agent.errors.DatabaseError` types; `connectivity=True` feeds degraded mode.
    """

    @property
    def dialect(self) -> str: ...

    def connect(self, timeout_secs: float) -> None: ...

    def execute_select(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        """Run the statements in one read-only transaction; rows of every result set."""
        ...

    def execute_dml(
        self,
        statements: Sequence[str],
        timeout_secs: int,
        limits: ResultLimits,
        cancel: CancelToken,
    ) -> ExecutionOutput:
        """Run the statements atomically: all of them commit, or none. Rows the statements
        return (RETURNING, an escalated SELECT) come back under `limits`, as a select's do."""
        ...

    def run_migration(
        self, operation: Operation, detail: str, timeout_secs: int, cancel: CancelToken
    ) -> ExecutionOutput: ...

    def explain(self, sql: str, timeout_secs: int) -> Any: ...

    def collect_schema(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class DatabaseFactory(Protocol):
    """Builds the adapter for one configured database URL."""

    def __call__(self, url: str) -> DatabasePort: ...


class Clock(Protocol):
    """Time, and the only way services wait: interruptibly, on an event."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        """Wait until `event` is set or the timeout passes; True if the event is set."""
        ...


class ProbePort(Protocol):
    """Liveness and readiness signals for supervisors (Kubernetes exec probes, systemd)."""

    def mark_alive(self) -> None: ...

    def set_ready(self, ready: bool) -> None: ...

    def clear(self) -> None: ...


class SignatureVerifier(Protocol):
    """Ed25519 verification with the key the server published at startup."""

    def load_public_key(self, hex_key: str) -> None: ...

    def verify(self, signature: bytes, message: bytes) -> bool: ...


class Random(Protocol):
    def uniform(self, low: float, high: float) -> float: ...
