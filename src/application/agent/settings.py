"""The agent's validated settings: what the config file says, in plain typed form.

The config adapter (TOML, `${VAR}` expansion, strict validation) builds this; services
only ever see this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.shared.listen import ListenAddress
from domain.shared.operations import DEFAULT_OPERATIONS, Operation
from domain.shared.scopes import Scope


@dataclass(frozen=True)
class DatabaseSettings:
    scope: Scope
    url: str
    migrations_dir: str | None = None

    @property
    def dialect(self) -> str:
        """`postgresql` or `mysql`, from the URL scheme (validated by the config loader)."""
        return "mysql" if self.url.startswith("mysql://") else "postgresql"


@dataclass(frozen=True)
class SchemaSyncSettings:
    enabled: bool = True
    sync_on_startup: bool = True
    #: 0 = only at startup and after migrations.
    interval_secs: int = 0


@dataclass(frozen=True)
class ServerConnectionSettings:
    url: str
    agent_token: str = field(repr=False)
    allow_insecure: bool = False
    #: Optional pinned Ed25519 public key (64 hex chars). When set, the key the server
    #: publishes must match it, so a rogue server cannot sign jobs.
    public_key: str | None = None


#: The agent's `log_format` values.
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class AgentSettings:
    server: ServerConnectionSettings
    databases: tuple[DatabaseSettings, ...]
    agent_id: str = "dbward-agent"
    poll_interval_ms: int = 1000
    poll_wait_ms: int = 20000
    heartbeat_interval_ms: int = 2000
    lease_duration_secs: int = 300
    drain_timeout_secs: int = 60
    max_concurrent_tasks: int = 2
    statement_timeout_secs: int = 30
    operations: tuple[Operation, ...] = DEFAULT_OPERATIONS
    operations_configured: bool = False
    startup_retry_initial_ms: int = 1000
    startup_retry_max_ms: int = 15000
    startup_max_wait_secs: int = 60
    liveness_probe_path: str = "/tmp/dbward-agent-alive"  # noqa: S108 - the brief's path
    readiness_probe_path: str = "/tmp/dbward-agent-ready"  # noqa: S108 - the brief's path
    max_result_rows: int = 10000
    max_result_bytes: int = 10 * 1024 * 1024
    schema_sync: SchemaSyncSettings = SchemaSyncSettings()
    #: Serve Prometheus metrics here, without authentication (docs/operations.md).
    metrics_listen: ListenAddress | None = None
    #: "text" or "json" (JSON lines); `DBWARD_LOG_FORMAT` overrides it.
    log_format: str = "text"

    @property
    def scopes(self) -> tuple[Scope, ...]:
        return tuple(db.scope for db in self.databases)
