"""The server's TOML config: read, expand `${VAR}`, validate strictly, build ServerSettings.

The same four steps as the agent's loader (adapters.config.agent, docs/agent.md §5
improvement 6), applied to server.toml (docs/server.md §2.1, §3, §4.2-§4.3, §6.5):

1. read the file and parse it with tomllib;
2. expand `${VAR}` / `${VAR:-default}` in string values only (adapters.config.env_expansion);
3. check the shape with strict pydantic models: unknown keys (with the nearest valid one),
   wrong types, out-of-range numbers; keys of dbward 0.2 that are gone or not supported
   yet get an explicit message instead of "unknown key";
4. check the meaning: names, operations, workflows (domain.server.workflows), policies
   (domain.server.execution_policies), roles and permissions (domain.server.rbac), and that every
   database and environment a workflow, policy or role names is registered in
   [[databases]].

Every problem is one line, `<file>: <key>: <what is wrong and how to fix it>`, all raised
together as one ConfigError. Warnings (say, a role repeated across approval steps) do not
stop the load: they come back in `ServerSettings.warnings`, in the same format, for the
server to log.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import Field

from adapters.config.env_expansion import KeyPath
from adapters.config.problems import (
    FileShape,
    Problem,
    StrictModel,
    config_error,
    dataclass_default,
    key_pattern,
    load_document,
    problem_lines,
)
from application.server.settings import (
    RESULTS_DIR_NAME,
    AuditRedaction,
    AuditSettings,
    AuthSettings,
    CustomRoleSettings,
    DatabaseRegistration,
    GroupSettings,
    LogFormat,
    LoggingSettings,
    MetricsSettings,
    PreflightSettings,
    ResultChannelSettings,
    ResultStorageSettings,
    RetentionSettings,
    ServerSettings,
    SigningSettings,
    StoreSettings,
    SweepSettings,
    TokenPolicySettings,
    WebhookSettings,
    default_store_url,
)
from domain.server.errors import Validation
from domain.server.execution_policies import (
    DeliveryMode,
    ExecutionPolicy,
    ResultPolicy,
    resolve_execution_policy,
    validate_execution_policies,
    validate_result_policies,
)
from domain.server.rbac import (
    BUILT_IN_ROLES,
    InvalidPermission,
    Permission,
    Selector,
    SelectorKind,
    parse_permission,
    parse_selector,
)
from domain.server.review_rules import ReviewRule, RuleAction
from domain.server.sql_review import SqlReviewPolicy, validate_review_policies
from domain.server.webhooks import (
    NotificationPolicy,
    RetryPolicy,
    Webhook,
    WebhookFormat,
    validate_notifications,
)
from domain.server.workflows import (
    WILDCARD,
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproveMode,
    RiskLevel,
    StepMode,
    ValidationProblem,
    Workflow,
    scope_name_problem,
    validate_workflow,
    validate_workflows,
)
from domain.shared.listen import LISTEN_EXAMPLE, ListenAddress, parse_listen
from domain.shared.operations import OPERATION_ALIASES, Operation
from domain.shared.scopes import Scope

__all__ = ["accepted_keys", "load_server_settings", "not_supported_keys"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_APPROVER_KINDS = ("role", "group", "user")
_STORE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


# --- the file's shape -----------------------------------------------------------------


_default = dataclass_default


def _positive(cls: type[Any], name: str) -> Any:
    return Field(default=_default(cls, name), ge=1)


class _ServerDatabaseSection(StrictModel):
    name: str
    environments: list[str]


class _ApproverFile(StrictModel):
    role: str | None = None
    group: str | None = None
    user: str | None = None
    min: int = 1  # range checked by domain.server.workflows, with the workflow rules


class _StepFile(StrictModel):
    type: str | None = None  # dbward 0.2 files say type = "approval"; nothing else exists
    mode: str = "all"
    approvers: list[_ApproverFile] = []


class _AutoApproveFile(StrictModel):
    mode: str
    risk: str | None = None
    allow_read_only: bool | None = None
    allow_safe_ddl: bool | None = None
    max_estimated_rows: int | None = Field(default=None, ge=1)


class _WorkflowFile(StrictModel):
    database: str = WILDCARD
    environment: str = WILDCARD
    operations: list[str] = []
    require_reason: bool = False
    allow_self_approve: bool = False
    allow_same_approver_across_steps: bool = False
    explain: bool = True
    pending_ttl_secs: int | None = Field(default=None, ge=1)
    approved_ttl_secs: int | None = Field(default=None, ge=1)
    statement_timeout_secs: int | None = Field(default=None, ge=1)
    auto_approve: _AutoApproveFile | None = None
    steps: list[_StepFile] = []


class _ExecutionPolicyFile(StrictModel):
    database: str = WILDCARD
    environment: str = WILDCARD
    max_executions: int | None = Field(default=None, ge=1)
    execution_window_secs: int | None = Field(default=None, ge=1)
    retry_on_failure: bool | None = None
    statement_timeout_secs: int | None = Field(default=None, ge=1)
    max_statement_timeout_secs: int | None = Field(default=None, ge=1)
    migration_statement_timeout_secs: int | None = Field(default=None, ge=0)
    migration_lease_duration_secs: int | None = Field(default=None, ge=60)
    max_rows: int | None = Field(default=None, ge=1)


class _ResultPolicyFile(StrictModel):
    database: str = WILDCARD
    environment: str = WILDCARD
    retention_days: int | None = Field(default=None, ge=1)
    delivery_mode: str = DeliveryMode.BOTH.value
    access: list[str] = []


class _SqlReviewFile(StrictModel):
    """One `[[sql_review]]` entry: its scope and one key per rule (docs/sql-safety.md §5)."""

    database: str = WILDCARD
    environment: str = WILDCARD
    no_where_delete: str | None = None
    no_where_update: str | None = None
    drop_table: str | None = None
    truncate: str | None = None
    drop_column: str | None = None
    not_null_without_default: str | None = None
    create_index_not_concurrently: str | None = None
    alter_column_type: str | None = None
    mixed_ddl_dml: str | None = None
    large_in_list: str | None = None
    drop_index: str | None = None
    drop_view: str | None = None
    drop_sequence: str | None = None
    create_sequence: str | None = None


class _RoleFile(StrictModel):
    name: str
    permissions: list[str]
    databases: list[str] = []
    environments: list[str] = []


class _GroupFile(StrictModel):
    name: str
    roles: list[str]


class _TokenPolicyFile(StrictModel):
    max_active_tokens_per_user: int = Field(
        default=_default(TokenPolicySettings, "max_active_tokens_per_user"), ge=0
    )


class _AuthFile(StrictModel):
    default_role: str | None = None
    roles: list[_RoleFile] = []
    groups: list[_GroupFile] = []
    token_policy: _TokenPolicyFile = _TokenPolicyFile()


class _RetentionFile(StrictModel):
    request_ttl_days: int = _positive(RetentionSettings, "request_ttl_days")
    audit_ttl_days: int = _positive(RetentionSettings, "audit_ttl_days")
    result_ttl_days: int = _positive(RetentionSettings, "result_ttl_days")
    pending_ttl_secs: int = _positive(RetentionSettings, "pending_ttl_secs")
    approved_ttl_secs: int = _positive(RetentionSettings, "approved_ttl_secs")
    agent_ttl_days: int = _positive(RetentionSettings, "agent_ttl_days")


class _AuditFile(StrictModel):
    redaction: str = AuditRedaction.LITERALS.value


class _ResultStorageFile(StrictModel):
    backend: str | None = None
    root_dir: str | None = None
    max_persist_bytes: int = _positive(ResultStorageSettings, "max_persist_bytes")


class _ResultChannelFile(StrictModel):
    slot_ttl_secs: int = _positive(ResultChannelSettings, "slot_ttl_secs")
    max_slots: int = _positive(ResultChannelSettings, "max_slots")


class _SweepsFile(StrictModel):
    lease_reclaim_interval_secs: int = _positive(SweepSettings, "lease_reclaim_interval_secs")
    dispatch_timeout_interval_secs: int = _positive(SweepSettings, "dispatch_timeout_interval_secs")
    ttl_expiry_interval_secs: int = _positive(SweepSettings, "ttl_expiry_interval_secs")
    dispatch_timeout_secs: int = _positive(SweepSettings, "dispatch_timeout_secs")
    record_purge_interval_secs: int = _positive(SweepSettings, "record_purge_interval_secs")


class _SigningFile(StrictModel):
    key_encryption_key_file: str | None = None


class _StoreFile(StrictModel):
    url: str | None = None


class _LoggingFile(StrictModel):
    level: str = _default(LoggingSettings, "level")
    format: str = LogFormat.TEXT.value


class _MetricsFile(StrictModel):
    listen: str | None = None


class _PreflightFile(StrictModel):
    max_concurrent_per_user: int = _positive(PreflightSettings, "max_concurrent_per_user")
    max_explain_timeout_ms: int = _positive(PreflightSettings, "max_explain_timeout_ms")


class _WebhookFile(StrictModel):
    id: str
    url: str
    format: str = WebhookFormat.GENERIC.value
    secret: str | None = None
    events: list[str] = []


class _NotificationPolicyFile(StrictModel):
    database: str = WILDCARD
    environment: str = WILDCARD
    webhooks: list[str]
    events: list[str] = []


class _WebhookDeliveryFile(StrictModel):
    max_attempts: int = Field(default=_default(RetryPolicy, "max_attempts"), ge=1, le=100)
    initial_backoff_secs: float = Field(default=_default(RetryPolicy, "initial_backoff_secs"), gt=0)
    max_backoff_secs: float = Field(default=_default(RetryPolicy, "max_backoff_secs"), gt=0)
    timeout_secs: float = Field(default=_default(WebhookSettings, "timeout_secs"), gt=0, le=60)


class _ServerConfigFile(StrictModel):
    state_dir: str
    listen: str = _default(ServerSettings, "listen")
    min_agent_version: str = _default(ServerSettings, "min_agent_version")
    databases: list[_ServerDatabaseSection]
    workflows: list[_WorkflowFile] = []
    execution_policies: list[_ExecutionPolicyFile] = []
    result_policies: list[_ResultPolicyFile] = []
    sql_review: list[_SqlReviewFile] = []
    auth: _AuthFile = _AuthFile()  # frozen, so one shared default is safe
    retention: _RetentionFile = _RetentionFile()
    audit: _AuditFile = _AuditFile()
    result_storage: _ResultStorageFile = _ResultStorageFile()
    signing: _SigningFile = _SigningFile()
    result_channel: _ResultChannelFile = _ResultChannelFile()
    sweeps: _SweepsFile = _SweepsFile()
    store: _StoreFile = _StoreFile()
    logging: _LoggingFile = _LoggingFile()
    preflight: _PreflightFile = _PreflightFile()
    metrics: _MetricsFile = _MetricsFile()
    allow_private_networks: bool = False
    webhooks: list[_WebhookFile] = []
    notification_policies: list[_NotificationPolicyFile] = []
    webhook_delivery: _WebhookDeliveryFile = _WebhookDeliveryFile()


# --- problems and how they read ---------------------------------------------------------


def _is_secret(key: KeyPath) -> bool:
    """A store URL may carry a password, a webhook secret is one: never echo them."""
    return key == ("store", "url") or key_pattern(key) == ("webhooks", "*", "secret")


#: Arrays of tables, written [[name]]: a single [name] table is a common slip.
_ARRAYS_OF_TABLES: dict[KeyPath, str] = {
    ("databases",): "[[databases]]",
    ("workflows",): "[[workflows]]",
    ("execution_policies",): "[[execution_policies]]",
    ("result_policies",): "[[result_policies]]",
    ("sql_review",): "[[sql_review]]",
    ("webhooks",): "[[webhooks]]",
    ("notification_policies",): "[[notification_policies]]",
    ("auth", "roles"): "[[auth.roles]]",
    ("auth", "groups"): "[[auth.groups]]",
    ("workflows", "*", "steps"): "[[workflows.steps]]",
    ("workflows", "*", "steps", "*", "approvers"): "[[workflows.steps.approvers]]",
}

_MISSING_HINTS: dict[KeyPath, str] = {
    ("state_dir",): 'required key is missing; add state_dir = "./data" '
    "(a directory for the server's state, relative to this file)",
    ("databases",): "required key is missing; register at least one database: "
    '[[databases]] name = "app" environments = ["production"]',
    ("databases", "*", "name"): 'required key is missing; add name = "<database>"',
    ("databases", "*", "environments"): "required key is missing; add the environments this "
    'database exists in, e.g. environments = ["production"]',
    ("workflows", "*", "auto_approve", "mode"): 'required key is missing; add mode = "always" '
    'or mode = "risk_based" with a risk threshold',
    ("auth", "roles", "*", "permissions"): "required key is missing; add permissions = [...] "
    '(e.g. ["request.query", "request.view:any"]; [] for a role used only as an approver)',
    ("auth", "groups", "*", "roles"): 'required key is missing; add roles = ["<role>", ...]',
    ("webhooks", "*", "id"): 'required key is missing; add id = "<name>" (e.g. "ops")',
    ("webhooks", "*", "url"): 'required key is missing; add url = "https://..."',
    ("notification_policies", "*", "webhooks"): "required key is missing; add the ids of "
    'the [[webhooks]] it sends to, e.g. webhooks = ["ops"]',
}

_NOT_YET = "is a dbward 0.2 setting that is not supported yet; remove it"

#: Keys that are not unknown but gone, renamed or not supported yet ("*" = any index).
#: docs/server.md §3.3 lists the keys that are not supported yet; a test holds the two
#: together.
_SPECIAL_KEYS: dict[KeyPath, str] = {
    ("users",): "[[users]] is no longer read from the config; add users through the API "
    "(dbward user add <ID> --role <role>)",
    ("auth", "role_bindings"): "[[auth.role_bindings]] is no longer read from the config; "
    "give users roles through the API (dbward user add/update --role <role>), "
    "or give roles to [[auth.groups]]",
    ("auth", "groups", "*", "members"): "group members are no longer read from the config; "
    "add them through the API (dbward user update <ID> --add-group <group>)",
    ("auto_approve",): "a top-level [[auto_approve]] is no longer supported; move it into "
    "the workflow it belongs to as [workflows.auto_approve]",
    ("workflows", "*", "approval_ttl_secs"): "renamed: use approved_ttl_secs (how long an "
    "approved request may wait to be resumed); pending_ttl_secs sets how long it may wait "
    "for approval",
    ("retention", "approval_ttl_secs"): "renamed: use pending_ttl_secs (it always set how long "
    "a request may wait for approval); approved_ttl_secs sets how long an approved request "
    "may wait to be resumed",
    ("workflows", "*", "steps", "*", "approvers", "*", "requester"): "the requester cannot be "
    "an approver; name a role, group or user (allow_self_approve = true lets a requester "
    "who matches one of them approve)",
    ("trusted_proxies",): f"trusted_proxies {_NOT_YET}",
    ("slack",): f"[slack] {_NOT_YET}",
    ("mcp",): f"[mcp] {_NOT_YET}",
    ("auth", "oidc"): f"[auth.oidc] {_NOT_YET}",
    **{
        ("result_storage", name): 'applies to backend = "s3", which is not supported yet; remove it'
        for name in (
            "bucket",
            "region",
            "endpoint",
            "access_key_id",
            "secret_access_key",
            "path_style",
            "prefix",
        )
    },
}


def _expected_hint(key: KeyPath, kind: str, value: Any) -> str:
    """How to write an array of tables, or a table, when the file wrote the other."""
    array = _ARRAYS_OF_TABLES.get(key_pattern(key))
    if array is not None and kind == "list_type":
        return f"; write {array} for each entry"
    if kind in ("model_type", "dict_type") and isinstance(value, list):
        table = ".".join(part for part in key if isinstance(part, str))
        return f"; write [{table}] once"
    return ""


_SHAPE = FileShape(
    _ServerConfigFile,
    is_secret=_is_secret,
    missing_hints=_MISSING_HINTS,
    special_keys=_SPECIAL_KEYS,
    expected_hint=_expected_hint,
)
_describe = _SHAPE.describe


# --- meaning ----------------------------------------------------------------------------


class _Collector:
    """Errors and warnings, in the order the checks find them."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, key: KeyPath, message: str) -> None:
        self.errors.append(Problem(key, message))

    def warn(self, key: KeyPath, message: str) -> None:
        self.warnings.append(Problem(key, message))

    def domain(self, problems: Sequence[ValidationProblem], *, warning: bool = False) -> None:
        for problem in problems:
            (self.warn if warning else self.error)(problem.key, problem.message)


def _choice(value: str, valid: Sequence[str], key: KeyPath, out: _Collector) -> str | None:
    """`value` when it is one of `valid`, else an error naming them (and the nearest)."""
    if value in valid:
        return value
    near = difflib.get_close_matches(value, list(valid), n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    options = ", ".join(f'"{v}"' for v in valid)
    out.error(key, f"must be one of {options}, got {_describe(value, key)}{hint}")
    return None


def _name(kind: str, value: str, key: KeyPath, out: _Collector, *, wildcard: bool) -> bool:
    problem = scope_name_problem(kind, value, wildcard=wildcard)
    if problem:
        out.error(key, problem)
        return False
    return True


class _Registry:
    """The registered (database, environment) pairs, for "is this name registered" checks."""

    def __init__(self, databases: Sequence[DatabaseRegistration]) -> None:
        self.environments = {db.name: set(db.environments) for db in databases}
        self.all_environments = {env for db in databases for env in db.environments}

    def problem(self, database: str, environment: str) -> tuple[str, str] | None:
        """(field, message) when the scope names something not in [[databases]]."""
        if database != WILDCARD and database not in self.environments:
            known = ", ".join(sorted(self.environments)) or "none"
            return "database", (
                f"database {database!r} is not registered; add it to [[databases]] "
                f"(registered: {known})"
            )
        if environment == WILDCARD:
            return None
        if database == WILDCARD:
            if environment not in self.all_environments:
                known = ", ".join(sorted(self.all_environments)) or "none"
                return "environment", (
                    f"environment {environment!r} is not registered for any database; add it "
                    f"to the environments of a [[databases]] entry (registered: {known})"
                )
        elif environment not in self.environments[database]:
            known = ", ".join(sorted(self.environments[database]))
            return "environment", (
                f"environment {environment!r} is not registered for database {database!r}; "
                f"add it to its environments in [[databases]] (registered: {known})"
            )
        return None

    def scopes_covered(self, database: str, environment: str) -> list[Scope]:
        """The registered scopes a (database, environment) pattern with `*` covers."""
        return [
            Scope(db, env)
            for db, envs in sorted(self.environments.items())
            for env in sorted(envs)
            if database in (WILDCARD, db) and environment in (WILDCARD, env)
        ]

    def check(self, database: str, environment: str, key: KeyPath, out: _Collector) -> None:
        """Report an unregistered name, unless the name itself is invalid (reported already)."""
        if scope_name_problem("database", database) or scope_name_problem(
            "environment", environment
        ):
            return
        found = self.problem(database, environment)
        if found is not None:
            out.error((*key, found[0]), found[1])


def _resolve_path(base: Path, raw: str) -> Path:
    """A path from the file, relative to the file's directory; absolute in the result."""
    return (base / raw).absolute()


def _build_listen(value: str, key: KeyPath, out: _Collector) -> ListenAddress | None:
    address = parse_listen(value)
    if address is None:
        out.error(key, f"expected {LISTEN_EXAMPLE}, got {_describe(value)}")
    return address


def _build_databases(
    entries: Sequence[_ServerDatabaseSection], out: _Collector
) -> tuple[DatabaseRegistration, ...]:
    registered: list[DatabaseRegistration] = []
    first: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key: KeyPath = ("databases", index)
        ok = _name("database", entry.name, (*key, "name"), out, wildcard=False)
        earlier = first.setdefault(entry.name, index)
        if earlier != index:
            out.error(
                (*key, "name"),
                f"database {entry.name!r} is already registered by databases[{earlier}]; "
                "list all its environments there",
            )
            ok = False
        if not entry.environments:
            out.error(
                (*key, "environments"),
                'empty; list the environments this database exists in, e.g. ["production"]',
            )
        environments: list[str] = []
        for position, env in enumerate(entry.environments):
            where: KeyPath = (*key, "environments", position)
            if not _name("environment", env, where, out, wildcard=False):
                continue
            if env in environments:
                out.error(where, f"{env!r} is listed twice; remove the duplicate")
                continue
            environments.append(env)
        if ok:
            registered.append(DatabaseRegistration(entry.name, tuple(environments)))
    if not entries:
        out.error(
            ("databases",),
            'no database registered; add [[databases]] name = "app" environments = ["production"]',
        )
    return tuple(registered)


def _parse_operations(names: Sequence[str], key: KeyPath, out: _Collector) -> tuple[Operation, ...]:
    """Canonical names only, as the agent's config: one name per operation everywhere."""
    valid = [op.value for op in Operation]
    parsed: list[Operation] = []
    for index, name in enumerate(names):
        where: KeyPath = (*key, index)
        if name in valid:
            parsed.append(Operation(name))
        elif name in OPERATION_ALIASES:
            canonical = OPERATION_ALIASES[name].value
            out.error(where, f'"{name}" is an alias; use the canonical name {canonical}')
        else:
            near = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            out.error(
                where, f"unknown operation {json.dumps(name)}{hint}; valid: {', '.join(valid)}"
            )
    return tuple(parsed)


def _build_auto_approve(
    model: _AutoApproveFile, key: KeyPath, out: _Collector
) -> AutoApprove | None:
    mode = _choice(model.mode, [m.value for m in AutoApproveMode], (*key, "mode"), out)
    if mode is None:
        return None
    if mode == AutoApproveMode.ALWAYS:
        for name in ("risk", "allow_read_only", "allow_safe_ddl", "max_estimated_rows"):
            if getattr(model, name) is not None:
                out.error(
                    (*key, name),
                    'applies to mode = "risk_based" only; remove it (mode "always" approves '
                    "every request)",
                )
        return AutoApprove(AutoApproveMode.ALWAYS)
    risk: RiskLevel | None = None
    if model.risk is not None:
        if model.risk in [level.value for level in RiskLevel]:
            risk = RiskLevel(
                model.risk
            )  # critical/unknown/...: domain.server.workflows says why not
        elif _choice(model.risk, ["low", "medium", "high"], (*key, "risk"), out) is None:
            return None
    defaults = AutoApprove(AutoApproveMode.RISK_BASED)
    return AutoApprove(
        AutoApproveMode.RISK_BASED,
        risk=risk,
        allow_read_only=_or(model.allow_read_only, defaults.allow_read_only),
        allow_safe_ddl=_or(model.allow_safe_ddl, defaults.allow_safe_ddl),
        max_estimated_rows=_or(model.max_estimated_rows, defaults.max_estimated_rows),
    )


_T = TypeVar("_T")


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _build_approver(model: _ApproverFile, key: KeyPath, out: _Collector) -> Approver | None:
    given = [(kind, getattr(model, kind)) for kind in _APPROVER_KINDS]
    given = [(kind, name) for kind, name in given if name is not None]
    if not given:
        out.error(key, 'needs one of role, group or user, e.g. role = "dba"')
        return None
    if len(given) > 1:
        out.error(
            key,
            f"set exactly one of role, group or user, got {' and '.join(k for k, _ in given)}; "
            "use one approver entry for each",
        )
        return None
    kind, name = given[0]
    return Approver(Selector(SelectorKind(kind), name), model.min)


def _build_step(model: _StepFile, key: KeyPath, out: _Collector) -> ApprovalStep | None:
    ok = True
    if model.type is not None and model.type != "approval":
        out.error((*key, "type"), f'must be "approval" (or left out), got {_describe(model.type)}')
        ok = False
    mode = _choice(model.mode, [m.value for m in StepMode], (*key, "mode"), out)
    approvers: list[Approver] = []
    for index, entry in enumerate(model.approvers):
        approver = _build_approver(entry, (*key, "approvers", index), out)
        if approver is None:
            ok = False
        else:
            approvers.append(approver)
    if mode is None or not ok:
        return None
    return ApprovalStep(tuple(approvers), StepMode(mode))


def _build_workflow(model: _WorkflowFile, key: KeyPath, out: _Collector) -> Workflow | None:
    before = len(out.errors)
    operations = _parse_operations(model.operations, (*key, "operations"), out)
    auto_approve = None
    if model.auto_approve is not None:
        auto_approve = _build_auto_approve(model.auto_approve, (*key, "auto_approve"), out)
    steps = [_build_step(step, (*key, "steps", i), out) for i, step in enumerate(model.steps)]
    if len(out.errors) > before:
        return None
    return Workflow(
        database=model.database,
        environment=model.environment,
        operations=operations,
        require_reason=model.require_reason,
        allow_self_approve=model.allow_self_approve,
        allow_same_approver_across_steps=model.allow_same_approver_across_steps,
        explain=model.explain,
        pending_ttl_secs=model.pending_ttl_secs,
        approved_ttl_secs=model.approved_ttl_secs,
        statement_timeout_secs=model.statement_timeout_secs,
        auto_approve=auto_approve,
        steps=tuple(step for step in steps if step is not None),
    )


def _build_workflows(
    models: Sequence[_WorkflowFile], registry: _Registry, out: _Collector
) -> tuple[Workflow, ...]:
    built = [_build_workflow(m, ("workflows", i), out) for i, m in enumerate(models)]
    complete = [wf for wf in built if wf is not None]
    if len(complete) == len(built):
        # Cross-workflow rules name other entries by index: only on the whole list.
        result = validate_workflows(complete)
        out.domain(result.errors)
        out.domain(result.warnings, warning=True)
    else:
        for index, workflow in enumerate(built):
            if workflow is not None:
                single = validate_workflow(workflow, ("workflows", index))
                out.domain(single.errors)
                out.domain(single.warnings, warning=True)
    for index, model in enumerate(models):
        registry.check(model.database, model.environment, ("workflows", index), out)
    if not models:
        out.warn(
            ("workflows",),
            "no [[workflows]]: every request will be refused (fail-closed); add a workflow "
            "for each database and environment that takes requests",
        )
    return tuple(complete)


def _check_approver_names(
    workflows: Sequence[_WorkflowFile], roles: set[str], groups: set[str], out: _Collector
) -> None:
    """Approvers naming roles or groups the config does not define: maybe API-made, maybe typos."""
    for w, workflow in enumerate(workflows):
        for s, step in enumerate(workflow.steps):
            for a, approver in enumerate(step.approvers):
                key: KeyPath = ("workflows", w, "steps", s, "approvers", a)
                if approver.role is not None and approver.role not in roles:
                    out.warn(
                        (*key, "role"),
                        f"role {approver.role!r} is neither built-in nor in [[auth.roles]]; "
                        "unless it is created through the API, nobody can approve this step",
                    )
                if approver.group is not None and approver.group not in groups:
                    out.warn(
                        (*key, "group"),
                        f"group {approver.group!r} is not in [[auth.groups]]; unless its members "
                        "come from the API or an identity provider, nobody can approve this step",
                    )


def _check_workflow_timeouts(
    models: Sequence[_WorkflowFile],
    policies: Sequence[ExecutionPolicy],
    registry: _Registry,
    out: _Collector,
) -> None:
    """A workflow's statement timeout must fit the cap of every policy it runs under."""
    for index, model in enumerate(models):
        timeout = model.statement_timeout_secs
        if timeout is None:
            continue
        for scope in registry.scopes_covered(model.database, model.environment):
            policy = resolve_execution_policy(policies, scope.database, scope.environment)
            if timeout > policy.max_statement_timeout_secs:
                out.error(
                    ("workflows", index, "statement_timeout_secs"),
                    f"{timeout} is above max_statement_timeout_secs "
                    f"({policy.max_statement_timeout_secs}) of execution policy {policy.id} "
                    f"for {scope}; lower it or raise that policy's cap",
                )
                break


def _build_execution_policies(
    models: Sequence[_ExecutionPolicyFile], registry: _Registry, out: _Collector
) -> tuple[ExecutionPolicy, ...]:
    policies: list[ExecutionPolicy] = []
    for index, model in enumerate(models):
        defaults = ExecutionPolicy()
        values = {
            name: getattr(model, name)
            for name in type(model).model_fields
            if getattr(model, name) is not None
        }
        policies.append(dataclasses.replace(defaults, **values))
        registry.check(model.database, model.environment, ("execution_policies", index), out)
    out.domain(validate_execution_policies(policies))
    return tuple(policies)


def _build_result_policies(
    models: Sequence[_ResultPolicyFile],
    default_retention_days: int,
    registry: _Registry,
    out: _Collector,
) -> tuple[ResultPolicy, ...]:
    policies: list[ResultPolicy] = []
    #: File index of each parsed access selector, per policy: a selector that failed to
    #: parse is left out, so the domain's indexes must be mapped back to the file's.
    positions: list[list[int]] = []
    for index, model in enumerate(models):
        key: KeyPath = ("result_policies", index)
        mode = _choice(
            model.delivery_mode, [m.value for m in DeliveryMode], (*key, "delivery_mode"), out
        )
        access: list[Selector] = []
        positions.append([])
        for position, text in enumerate(model.access):
            try:
                access.append(parse_selector(text))
            except Validation as error:
                out.error((*key, "access", position), error.message)
            else:
                positions[-1].append(position)
        registry.check(model.database, model.environment, key, out)
        policies.append(
            ResultPolicy(
                database=model.database,
                environment=model.environment,
                retention_days=_or(model.retention_days, default_retention_days),
                delivery_mode=DeliveryMode(mode) if mode else DeliveryMode.BOTH,
                access=tuple(access),
            )
        )
    for problem in validate_result_policies(policies):
        key = problem.key
        match key:
            case ("result_policies", int(policy), "access", int(position), *rest):
                key = ("result_policies", policy, "access", positions[policy][position], *rest)
        out.error(key, problem.message)
    return tuple(policies)


def _build_sql_review(
    models: Sequence[_SqlReviewFile], registry: _Registry, out: _Collector
) -> tuple[SqlReviewPolicy, ...]:
    """`[[sql_review]]`: each rule key `block`, `warn` or `off`; unset rules keep the default."""
    actions = [action.value for action in RuleAction]
    policies: list[SqlReviewPolicy] = []
    for index, model in enumerate(models):
        key: KeyPath = ("sql_review", index)
        rules: dict[ReviewRule, RuleAction] = {}
        for rule in ReviewRule:
            value = getattr(model, rule.value)
            if value is not None and _choice(value, actions, (*key, rule.value), out):
                rules[rule] = RuleAction(value)
        registry.check(model.database, model.environment, key, out)
        policies.append(SqlReviewPolicy(model.database, model.environment, MappingProxyType(rules)))
    out.domain(validate_review_policies(policies))
    return tuple(policies)


def _permission_problem(text: str) -> str | None:
    try:
        parse_permission(text)
    except InvalidPermission as error:
        message = error.message
        name = text.partition(":")[0]
        if message.startswith("unknown permission"):
            valid = [p.value for p in Permission]
            near = difflib.get_close_matches(name, valid, n=1)
            message += f" (did you mean {near[0]}?)" if near else f"; valid: {', '.join(valid)}"
        return message
    return None


def _build_auth(model: _AuthFile, registry: _Registry, out: _Collector) -> AuthSettings:
    roles: list[CustomRoleSettings] = []
    defined: dict[str, int] = {}
    for index, role in enumerate(model.roles):
        key: KeyPath = ("auth", "roles", index)
        ok = _name("role", role.name, (*key, "name"), out, wildcard=False)
        if role.name in BUILT_IN_ROLES:
            out.error(
                (*key, "name"),
                f"{role.name!r} is a built-in role and cannot be redefined; choose another name "
                f"(built-in: {', '.join(BUILT_IN_ROLES)})",
            )
            ok = False
        elif defined.setdefault(role.name, index) != index:
            out.error(
                (*key, "name"),
                f"role {role.name!r} is already defined by auth.roles[{defined[role.name]}]",
            )
            ok = False
        for position, text in enumerate(role.permissions):
            problem = _permission_problem(text)
            if problem:
                out.error((*key, "permissions", position), problem)
        for field, kind in (("databases", "database"), ("environments", "environment")):
            for position, name in enumerate(getattr(role, field)):
                where: KeyPath = (*key, field, position)
                if not _name(kind, name, where, out, wildcard=True) or name == WILDCARD:
                    continue
                scope = (name, WILDCARD) if kind == "database" else (WILDCARD, name)
                found = registry.problem(*scope)
                if found is not None:
                    out.error(where, found[1])
        if ok:
            roles.append(
                CustomRoleSettings(
                    role.name,
                    tuple(role.permissions),
                    tuple(role.databases),
                    tuple(role.environments),
                )
            )
    known_roles = set(BUILT_IN_ROLES) | set(defined)
    groups: list[GroupSettings] = []
    group_names: dict[str, int] = {}
    for index, group in enumerate(model.groups):
        key = ("auth", "groups", index)
        ok = _name("group", group.name, (*key, "name"), out, wildcard=False)
        if group_names.setdefault(group.name, index) != index:
            out.error(
                (*key, "name"),
                f"group {group.name!r} is already defined by "
                f"auth.groups[{group_names[group.name]}]",
            )
            ok = False
        if not group.roles:
            out.error((*key, "roles"), 'empty; give the group at least one role, e.g. ["approver"]')
        for position, name in enumerate(group.roles):
            if name not in known_roles:
                out.error((*key, "roles", position), _unknown_role(name, known_roles))
        if ok:
            groups.append(GroupSettings(group.name, tuple(group.roles)))
    if model.default_role is not None and model.default_role not in known_roles:
        out.error(("auth", "default_role"), _unknown_role(model.default_role, known_roles))
    return AuthSettings(
        default_role=model.default_role,
        roles=tuple(roles),
        groups=tuple(groups),
        token_policy=TokenPolicySettings(model.token_policy.max_active_tokens_per_user),
    )


def _unknown_role(name: str, known: set[str]) -> str:
    near = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return (
        f"unknown role {name!r}{hint}; use a built-in role ({', '.join(BUILT_IN_ROLES)}) "
        "or define it in [[auth.roles]]"
    )


def _build_store(raw: str | None, state_dir: Path, base: Path, out: _Collector) -> StoreSettings:
    if raw is None:
        return StoreSettings(default_store_url(state_dir))
    key: KeyPath = ("store", "url")
    if raw.startswith("sqlite:///"):
        location = raw.removeprefix("sqlite:///")
        database_path, sep, query = location.partition("?")
        if not database_path or database_path == ":memory:":
            out.error(key, "an in-memory SQLite store loses everything on restart; give a file")
            return StoreSettings(raw)
        resolved = _resolve_path(base, database_path)
        return StoreSettings(f"sqlite:///{resolved}{sep}{query}")
    if raw.startswith(_STORE_SCHEMES):
        return StoreSettings(raw)
    if raw.startswith("postgres://"):
        out.error(key, "write postgresql:// instead of postgres:// (SQLAlchemy's spelling)")
        return StoreSettings(raw)
    scheme = _SCHEME.match(raw)
    got = f'"{scheme.group()}"' if scheme else "no scheme"
    out.error(
        key,
        f"unsupported store URL scheme {got}; use sqlite:///<path> (the default is "
        "<state_dir>/dbward.db) or postgresql://user:password@host/dbname",
    )
    return StoreSettings(raw)


def _build_result_storage(
    model: _ResultStorageFile, store: StoreSettings, state_dir: Path, base: Path, out: _Collector
) -> ResultStorageSettings:
    """`backend` defaults to "store" on a PostgreSQL store and "local" on SQLite; results
    on one replica's disk cannot be served by the others, so PostgreSQL refuses "local"."""
    key: KeyPath = ("result_storage", "backend")
    backend = model.backend or ("local" if store.is_sqlite else "store")
    if backend == "s3":
        out.error(key, '"s3" is not supported yet; use backend = "store" (in the store) or "local"')
    elif _choice(backend, ["local", "store"], key, out) == "local" and not store.is_sqlite:
        out.error(
            key,
            '"local" keeps results on one replica\'s disk, which the other replicas '
            'sharing a PostgreSQL store cannot read; use backend = "store" (the default)',
        )
    root = (
        state_dir / RESULTS_DIR_NAME
        if model.root_dir is None
        else _resolve_path(base, model.root_dir)
    )
    if model.root_dir == "":
        out.error(("result_storage", "root_dir"), "must not be empty; leave it out for the default")
    return ResultStorageSettings(
        root_dir=root, backend=backend, max_persist_bytes=model.max_persist_bytes
    )


def _build_signing(model: _SigningFile, base: Path, out: _Collector) -> SigningSettings:
    raw = model.key_encryption_key_file
    if raw == "":
        out.error(
            ("signing", "key_encryption_key_file"),
            "must not be empty; leave it out to use DBWARD_KEY_ENCRYPTION_KEY",
        )
        return SigningSettings()
    return SigningSettings(None if raw is None else _resolve_path(base, raw))


def _build_webhooks(
    model: _ServerConfigFile, registry: _Registry, out: _Collector
) -> WebhookSettings:
    """`[[webhooks]]`, `[[notification_policies]]`, `allow_private_networks` and
    `[webhook_delivery]` (docs/operations.md "Webhooks")."""
    formats = [f.value for f in WebhookFormat]
    webhooks: list[Webhook] = []
    for index, hook in enumerate(model.webhooks):
        chosen = _choice(hook.format, formats, ("webhooks", index, "format"), out)
        webhooks.append(
            Webhook(
                id=hook.id,
                url=hook.url,
                format=WebhookFormat(chosen) if chosen else WebhookFormat.GENERIC,
                secret=hook.secret,
                events=tuple(hook.events),
            )
        )
    policies: list[NotificationPolicy] = []
    for index, policy in enumerate(model.notification_policies):
        registry.check(policy.database, policy.environment, ("notification_policies", index), out)
        policies.append(
            NotificationPolicy(
                webhooks=tuple(policy.webhooks),
                database=policy.database,
                environment=policy.environment,
                events=tuple(policy.events),
            )
        )
    out.domain(
        validate_notifications(
            webhooks, policies, allow_private_networks=model.allow_private_networks
        )
    )
    delivery = model.webhook_delivery
    if delivery.initial_backoff_secs > delivery.max_backoff_secs:
        out.error(
            ("webhook_delivery", "initial_backoff_secs"),
            f"{delivery.initial_backoff_secs} is above max_backoff_secs "
            f"({delivery.max_backoff_secs}); lower it or raise max_backoff_secs",
        )
    return WebhookSettings(
        webhooks=tuple(webhooks),
        notification_policies=tuple(policies),
        allow_private_networks=model.allow_private_networks,
        retry=RetryPolicy(
            max_attempts=delivery.max_attempts,
            initial_backoff_secs=delivery.initial_backoff_secs,
            max_backoff_secs=delivery.max_backoff_secs,
        ),
        timeout_secs=delivery.timeout_secs,
    )


def _build(model: _ServerConfigFile, path: Path) -> ServerSettings:
    out = _Collector()
    base = path.parent
    if not model.state_dir:
        out.error(("state_dir",), 'must not be empty; e.g. state_dir = "./data"')
    state_dir = _resolve_path(base, model.state_dir)
    _build_listen(model.listen, ("listen",), out)
    metrics_listen = (
        None
        if model.metrics.listen is None
        else _build_listen(model.metrics.listen, ("metrics", "listen"), out)
    )
    if not _VERSION.fullmatch(model.min_agent_version):
        out.error(
            ("min_agent_version",),
            f'expected a version such as "0.2.0", got {_describe(model.min_agent_version)}',
        )
    databases = _build_databases(model.databases, out)
    registry = _Registry(databases)
    workflows = _build_workflows(model.workflows, registry, out)
    execution_policies = _build_execution_policies(model.execution_policies, registry, out)
    _check_workflow_timeouts(model.workflows, execution_policies, registry, out)
    retention = RetentionSettings(
        request_ttl_days=model.retention.request_ttl_days,
        audit_ttl_days=model.retention.audit_ttl_days,
        result_ttl_days=model.retention.result_ttl_days,
        pending_ttl_secs=model.retention.pending_ttl_secs,
        approved_ttl_secs=model.retention.approved_ttl_secs,
        agent_ttl_days=model.retention.agent_ttl_days,
    )
    result_policies = _build_result_policies(
        model.result_policies, retention.result_ttl_days, registry, out
    )
    sql_review = _build_sql_review(model.sql_review, registry, out)
    auth = _build_auth(model.auth, registry, out)
    _check_approver_names(
        model.workflows,
        set(BUILT_IN_ROLES) | {role.name for role in model.auth.roles},
        {group.name for group in model.auth.groups},
        out,
    )
    redaction = _choice(
        model.audit.redaction, [r.value for r in AuditRedaction], ("audit", "redaction"), out
    )
    level = _choice(model.logging.level, _LOG_LEVELS, ("logging", "level"), out)
    log_format = _choice(
        model.logging.format, [f.value for f in LogFormat], ("logging", "format"), out
    )
    store = _build_store(model.store.url, state_dir, base, out)
    result_storage = _build_result_storage(model.result_storage, store, state_dir, base, out)
    signing = _build_signing(model.signing, base, out)
    webhooks = _build_webhooks(model, registry, out)
    if out.errors:
        raise config_error(path, out.errors)
    sweeps = model.sweeps
    return ServerSettings(
        state_dir=state_dir,
        listen=model.listen,
        min_agent_version=model.min_agent_version,
        databases=databases,
        workflows=workflows,
        execution_policies=execution_policies,
        result_policies=result_policies,
        sql_review=sql_review,
        auth=auth,
        retention=retention,
        audit=AuditSettings(AuditRedaction(redaction)) if redaction else AuditSettings(),
        result_storage=result_storage,
        signing=signing,
        result_channel=ResultChannelSettings(
            model.result_channel.slot_ttl_secs, model.result_channel.max_slots
        ),
        sweeps=SweepSettings(
            lease_reclaim_interval_secs=sweeps.lease_reclaim_interval_secs,
            dispatch_timeout_interval_secs=sweeps.dispatch_timeout_interval_secs,
            ttl_expiry_interval_secs=sweeps.ttl_expiry_interval_secs,
            dispatch_timeout_secs=sweeps.dispatch_timeout_secs,
            record_purge_interval_secs=sweeps.record_purge_interval_secs,
        ),
        store=store,
        logging=LoggingSettings(
            level=level or "info", format=LogFormat(log_format) if log_format else LogFormat.TEXT
        ),
        preflight=PreflightSettings(
            model.preflight.max_concurrent_per_user, model.preflight.max_explain_timeout_ms
        ),
        metrics=MetricsSettings(listen=metrics_listen),
        webhooks=webhooks,
        warnings=tuple(problem_lines(path, out.warnings)),
    )


# --- loading ----------------------------------------------------------------------------


def load_server_settings(path: Path, environ: Mapping[str, str]) -> ServerSettings:
    """Load the server config at `path`, expanding `${VAR}` from `environ`.

    Raises ConfigError whose message has one line per problem, each naming the file and
    the key. Relative paths (state_dir, result_storage.root_dir, a sqlite store URL) are
    relative to the file's directory. `environ` is explicit (the entrypoint passes
    os.environ) so loading never depends on the process it happens to run in.
    """
    document = load_document(path, environ)
    return _build(_SHAPE.validate(document, path), path)


def accepted_keys() -> frozenset[str]:
    """Every key server.toml accepts, dotted (`workflows.steps.approvers.role`): the keys
    docs/server.md §3 documents, as a test holds them."""
    return _SHAPE.accepted_keys()


def not_supported_keys() -> frozenset[str]:
    """The keys refused with "not supported yet", as docs/server.md §3.3 lists them."""
    return _SHAPE.not_supported_keys()
