"""The server's validated settings: what server.toml says, in plain typed form.

The config adapter (adapters.config.server: TOML, `${VAR}` expansion, strict validation)
builds these; services only ever see the dataclasses. Defaults live here, once; the
adapter's file models read them from these classes. Paths are absolute: the loader
resolves relative ones against the config file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from domain.server.execution_policies import (
    ExecutionPolicy,
    ResultPolicy,
    resolve_execution_policy,
    resolve_result_policy,
)
from domain.server.sql_review import SqlReviewPolicy, resolve_review_policy
from domain.server.webhooks import NotificationPolicy, RetryPolicy, Webhook
from domain.server.workflows import Workflow, match_workflow
from domain.shared.listen import ListenAddress
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

__all__ = [
    "AuditRedaction",
    "AuditSettings",
    "AuthSettings",
    "CustomRoleSettings",
    "DatabaseRegistration",
    "GroupSettings",
    "LogFormat",
    "LoggingSettings",
    "PreflightSettings",
    "ResultChannelSettings",
    "ResultStorageSettings",
    "RetentionSettings",
    "ServerSettings",
    "SigningSettings",
    "StoreSettings",
    "SweepSettings",
    "TokenPolicySettings",
    "WebhookSettings",
    "default_store_url",
]

DEFAULT_LISTEN = "127.0.0.1:3000"
DEFAULT_MIN_AGENT_VERSION = "0.2.0"
STORE_FILE_NAME = "dbward.db"
RESULTS_DIR_NAME = "results"


@dataclass(frozen=True)
class DatabaseRegistration:
    """One `[[databases]]` entry: a logical database and the environments it exists in."""

    name: str
    environments: tuple[str, ...]

    @property
    def scopes(self) -> tuple[Scope, ...]:
        return tuple(Scope(self.name, env) for env in self.environments)


# --- [auth] ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomRoleSettings:
    """`[[auth.roles]]`: permissions as written (`request.view:any`), scope lists empty = `*`."""

    name: str
    permissions: tuple[str, ...]
    databases: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupSettings:
    """`[[auth.groups]]`: a group's roles. Members are managed through the API."""

    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class TokenPolicySettings:
    #: Active (not revoked, not expired) tokens one user may hold; 0 = unlimited.
    max_active_tokens_per_user: int = 5


@dataclass(frozen=True)
class AuthSettings:
    #: Given to a user who resolves no role; must be a built-in or custom role.
    default_role: str | None = None
    roles: tuple[CustomRoleSettings, ...] = ()
    groups: tuple[GroupSettings, ...] = ()
    token_policy: TokenPolicySettings = TokenPolicySettings()


# --- lifetimes, audit, results ----------------------------------------------------------------


@dataclass(frozen=True)
class RetentionSettings:
    #: Requests in a final status are purged this long after their last change.
    request_ttl_days: int = 90
    audit_ttl_days: int = 365
    #: Stored-result retention where no [[result_policies]] entry sets retention_days.
    result_ttl_days: int = 30
    #: A pending request expires this long after creation (workflow pending_ttl_secs wins).
    pending_ttl_secs: int = 86400
    #: An approved request expires this long after approval (workflow approved_ttl_secs wins).
    approved_ttl_secs: int = 86400
    #: An agent that has not polled for this long leaves the registry (docs/server.md §7.3).
    agent_ttl_days: int = 7


class AuditRedaction(StrEnum):
    """What the audit log's `detail_raw` keeps (`detail_fingerprint` is always redacted)."""

    #: Literals replaced with `?` (the default).
    LITERALS = "literals"
    #: No SQL at all in `detail_raw`.
    FULL = "full"
    #: The raw SQL.
    NONE = "none"


@dataclass(frozen=True)
class AuditSettings:
    redaction: AuditRedaction = AuditRedaction.LITERALS


@dataclass(frozen=True)
class ResultStorageSettings:
    """Where persisted results live (docs/server.md §7.4).

    `backend` is `"local"` (files under `root_dir`, one process) or `"store"` (the store's
    `result_contents` table, which every replica sharing a PostgreSQL store reads).
    """

    root_dir: Path
    backend: str = "local"
    #: Results larger than this are streamed but not persisted.
    max_persist_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class SigningSettings:
    """Where the key-encryption key that seals the store's secrets comes from (§7.4).

    None: `DBWARD_KEY_ENCRYPTION_KEY`, else (SQLite store only) a key generated in the
    state dir.
    """

    key_encryption_key_file: Path | None = None


@dataclass(frozen=True)
class ResultChannelSettings:
    """The in-memory relay from an agent's result to a waiting client."""

    slot_ttl_secs: int = 600
    max_slots: int = 10000


@dataclass(frozen=True)
class SweepSettings:
    """Background sweeps. Ours: configurable, every 5 s (dbward 0.2: fixed 60 s)."""

    lease_reclaim_interval_secs: int = 5
    dispatch_timeout_interval_secs: int = 5
    ttl_expiry_interval_secs: int = 5
    #: A dispatched request nobody claimed for this long goes back to its previous status.
    dispatch_timeout_secs: int = 300
    #: How often expired result content, requests past `request_ttl_days` and agents past
    #: `agent_ttl_days` are purged.
    record_purge_interval_secs: int = 3600


def default_store_url(state_dir: Path) -> str:
    """`sqlite:///<state_dir>/dbward.db` (four slashes before an absolute path)."""
    return f"sqlite:///{state_dir / STORE_FILE_NAME}"


@dataclass(frozen=True)
class StoreSettings:
    """The control-plane store: SQLite in the state dir, or PostgreSQL for several replicas."""

    url: str = field(repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite:")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True)
class LoggingSettings:
    #: A Python logging level name, lower case: debug, info, warning, error, critical.
    level: str = "info"
    format: LogFormat = LogFormat.TEXT


@dataclass(frozen=True)
class PreflightSettings:
    """`[preflight]`: the EXPLAIN a preflight runs through an agent (docs/preflight.md)."""

    #: Preflight EXPLAIN jobs one user may have waiting for an agent at once; more is 429.
    max_concurrent_per_user: int = 3
    #: The longest a preflight waits for its plan, whatever `explain_timeout_ms` asks.
    max_explain_timeout_ms: int = 10000


@dataclass(frozen=True)
class MetricsSettings:
    """`[metrics]`: `GET /metrics` is always served (with `metrics.view`); `listen` adds
    a listener that serves it without authentication (docs/operations.md "Metrics")."""

    listen: ListenAddress | None = None


@dataclass(frozen=True)
class WebhookSettings:
    """`[[webhooks]]`, `[[notification_policies]]`, `allow_private_networks` and
    `[webhook_delivery]` (docs/operations.md "Webhooks")."""

    webhooks: tuple[Webhook, ...] = ()
    notification_policies: tuple[NotificationPolicy, ...] = ()
    #: Whether webhook URLs may reach private, loopback and link-local addresses.
    allow_private_networks: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: The longest one send may take (connect, write, answer).
    timeout_secs: float = 10.0


# --- the whole file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """Everything server.toml configures. Build it with `adapters.config.server` or by hand."""

    state_dir: Path
    result_storage: ResultStorageSettings
    store: StoreSettings
    listen: str = DEFAULT_LISTEN
    min_agent_version: str = DEFAULT_MIN_AGENT_VERSION
    databases: tuple[DatabaseRegistration, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    execution_policies: tuple[ExecutionPolicy, ...] = ()
    result_policies: tuple[ResultPolicy, ...] = ()
    sql_review: tuple[SqlReviewPolicy, ...] = ()
    auth: AuthSettings = AuthSettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    signing: SigningSettings = SigningSettings()
    result_channel: ResultChannelSettings = ResultChannelSettings()
    sweeps: SweepSettings = SweepSettings()
    logging: LoggingSettings = LoggingSettings()
    preflight: PreflightSettings = PreflightSettings()
    metrics: MetricsSettings = MetricsSettings()
    webhooks: WebhookSettings = WebhookSettings()
    #: Config warnings (`<file>: <key>: <message>`), for the server to log at start.
    warnings: tuple[str, ...] = ()

    @classmethod
    def for_state_dir(cls, state_dir: Path, **overrides: Any) -> ServerSettings:
        """Defaults derived from `state_dir` (store and results inside it); for tests and dev."""
        base = cls(
            state_dir=state_dir,
            result_storage=ResultStorageSettings(root_dir=state_dir / RESULTS_DIR_NAME),
            store=StoreSettings(default_store_url(state_dir)),
        )
        return replace(base, **overrides)

    @property
    def listen_host(self) -> str:
        """The host part of `listen`, brackets of an IPv6 address removed."""
        return self.listen.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def registered_scopes(self) -> frozenset[Scope]:
        """Every registered (database, environment): requests elsewhere are refused."""
        return frozenset(scope for db in self.databases for scope in db.scopes)

    def is_registered(self, database: str, environment: str) -> bool:
        return Scope(database, environment) in self.registered_scopes

    def workflow_for(
        self, database: str, environment: str, operation: Operation
    ) -> Workflow | None:
        return match_workflow(self.workflows, database, environment, operation)

    def execution_policy_for(self, database: str, environment: str) -> ExecutionPolicy:
        return resolve_execution_policy(self.execution_policies, database, environment)

    def review_policy_for(self, database: str, environment: str) -> SqlReviewPolicy:
        return resolve_review_policy(self.sql_review, database, environment)

    def result_policy_for(self, database: str, environment: str) -> ResultPolicy:
        return resolve_result_policy(
            self.result_policies, database, environment, self.retention.result_ttl_days
        )

    def pending_ttl_secs(self, workflow: Workflow | None) -> int:
        """The workflow's pending TTL, else `[retention].pending_ttl_secs`."""
        if workflow is not None and workflow.pending_ttl_secs is not None:
            return workflow.pending_ttl_secs
        return self.retention.pending_ttl_secs

    def approved_ttl_secs(self, workflow: Workflow | None) -> int:
        """The workflow's approved TTL, else `[retention].approved_ttl_secs`."""
        if workflow is not None and workflow.approved_ttl_secs is not None:
            return workflow.approved_ttl_secs
        return self.retention.approved_ttl_secs
