"""The agent's TOML config: read, expand `${VAR}`, validate strictly, build AgentSettings.

docs/agent.md §5 improvement 6. The dbward 0.2 agent ignores unknown keys (so a typo silently
keeps a default) and expands `${...}` over the raw text, comments included. Here:

1. read the file and parse it with tomllib;
2. expand `${VAR}` / `${VAR:-default}` in string values only (adapters.config.env_expansion);
3. check the shape with strict pydantic models: unknown keys, wrong types, out-of-range
   numbers (no "2" -> 2 coercion, a bool is never an int);
4. check the meaning in plain code: URL schemes, cleartext tokens, scope names, operation
   names, timing relations.

Every problem becomes one line, `<file>: <key>: <what is wrong and how to fix it>`, and
all of them are raised together as one ConfigError, so a user fixes a file in one pass.
Pydantic's own text and tracebacks never reach the user.

`render_effective_config` prints the result back as TOML with the secrets redacted, for
`dbward agent --print-config` style diagnostics.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from adapters.config.env_expansion import KeyPath
from adapters.config.problems import (
    FileShape,
    Problem,
    StrictModel,
    config_error,
    dataclass_default,
    load_document,
)
from application.agent.settings import (
    LOG_FORMATS,
    AgentSettings,
    DatabaseSettings,
    SchemaSyncSettings,
    ServerConnectionSettings,
)
from domain.shared.listen import LISTEN_EXAMPLE, parse_listen
from domain.shared.operations import DEFAULT_OPERATIONS, OPERATION_ALIASES, Operation
from domain.shared.scopes import InvalidScopeNameError, Scope, validate_scope_name

__all__ = ["accepted_keys", "is_local_host", "load_agent_settings", "render_effective_config"]

#: Overrides `[server].allow_insecure` when set: true iff "true" or "1" (docs/protocol.md §11.1).
ALLOW_INSECURE_ENV = "DBWARD_ALLOW_INSECURE"

_SERVER_SCHEMES = ("http://", "https://")
_DATABASE_SCHEMES = ("postgres://", "postgresql://", "mysql://")
_PUBLIC_KEY = re.compile(r"[0-9a-fA-F]{64}")
#: What an HTTP header can carry safely: printable ASCII, no spaces.
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")
#: dbward 0.2's list of hosts an http:// URL may reach without allow_insecure.
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "0.0.0.0/32",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
    )
)
_LOCAL_SUFFIXES = (".svc.cluster.local", ".internal")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


# --- the file's shape -----------------------------------------------------------------


_default = dataclass_default


class _SchemaSyncFile(StrictModel):
    enabled: bool = _default(SchemaSyncSettings, "enabled")
    sync_on_startup: bool = _default(SchemaSyncSettings, "sync_on_startup")
    interval_secs: int = Field(default=_default(SchemaSyncSettings, "interval_secs"), ge=0)


class _AgentServerSection(StrictModel):
    url: str
    agent_token: str = Field(min_length=1)
    allow_insecure: bool = _default(ServerConnectionSettings, "allow_insecure")
    public_key: str | None = None


class _AgentDatabaseSection(StrictModel):
    url: str
    migrations_dir: str | None = None


def _agent(name: str, **constraints: Any) -> Any:
    return Field(default=_default(AgentSettings, name), **constraints)


class _AgentFile(StrictModel):
    agent_id: str | None = Field(default=None, min_length=1)
    poll_interval_ms: int = _agent("poll_interval_ms", ge=1)
    poll_wait_ms: int = _agent("poll_wait_ms", ge=0, le=60000)
    heartbeat_interval_ms: int = _agent("heartbeat_interval_ms", ge=100)
    lease_duration_secs: int = _agent("lease_duration_secs", ge=10)
    drain_timeout_secs: int = _agent("drain_timeout_secs", ge=0)
    max_concurrent_tasks: int = _agent("max_concurrent_tasks", ge=0)
    statement_timeout_secs: int = _agent("statement_timeout_secs", ge=0)
    operations: list[str] | None = None
    startup_retry_initial_ms: int = _agent("startup_retry_initial_ms", ge=1)
    startup_retry_max_ms: int = _agent("startup_retry_max_ms", ge=1)
    startup_max_wait_secs: int = _agent("startup_max_wait_secs", ge=0)
    liveness_probe_path: str = _agent("liveness_probe_path", min_length=1)
    readiness_probe_path: str = _agent("readiness_probe_path", min_length=1)
    max_result_rows: int = _agent("max_result_rows", ge=1)
    max_result_bytes: int = _agent("max_result_bytes", ge=1024)
    schema_sync: _SchemaSyncFile = _SchemaSyncFile()  # frozen, so one shared default is safe
    metrics_listen: str | None = None
    log_format: str = _agent("log_format")
    server: _AgentServerSection
    databases: dict[str, dict[str, _AgentDatabaseSection]]


# --- problems and how they read ---------------------------------------------------------


def _is_secret(key: KeyPath) -> bool:
    """Values that must not be echoed in an error: tokens and database URLs (passwords)."""
    return bool(key) and (key[-1] == "agent_token" or key[0] == "databases")


_MISSING_HINTS: dict[KeyPath, str] = {
    ("server",): "required table is missing; add [server] with url and agent_token",
    ("databases",): "required table is missing; add [databases.<database>.<environment>] "
    "with a url",
}


_TABLE_KINDS = ("dict_type", "model_type", "model_attributes_type")


def _expected_hint(key: KeyPath, kind: str, value: Any) -> str:
    if key[:1] == ("databases",) and len(key) == 3 and kind in _TABLE_KINDS:
        return "; databases are tables named [databases.<database>.<environment>]"
    return ""


_SHAPE = FileShape(
    _AgentFile,
    is_secret=_is_secret,
    missing_hints=_MISSING_HINTS,
    expected_hint=_expected_hint,
)
_describe = _SHAPE.describe


# --- meaning ----------------------------------------------------------------------------


def _parse_operations(
    names: list[str] | None, problems: list[Problem]
) -> tuple[tuple[Operation, ...], bool]:
    """Canonical names only: the server answers 422 to an alias in a poll, so say it now."""
    if names is None:
        return DEFAULT_OPERATIONS, False
    if not names:
        problems.append(
            Problem(
                ("operations",),
                "empty list; remove the key for the defaults, "
                "or set max_concurrent_tasks = 0 to take no jobs",
            )
        )
    valid = [op.value for op in Operation]
    parsed: list[Operation] = []
    for index, name in enumerate(names):
        key: KeyPath = ("operations", index)
        if name in valid:
            if Operation(name) not in parsed:
                parsed.append(Operation(name))
        elif name in OPERATION_ALIASES:
            canonical = OPERATION_ALIASES[name].value
            problems.append(
                Problem(key, f'"{name}" is an alias; use the canonical name {canonical}')
            )
        else:
            near = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            problems.append(
                Problem(
                    key,
                    f"unknown operation {json.dumps(name)}{hint}; valid: {', '.join(valid)}",
                )
            )
    return tuple(parsed), True


def is_local_host(host: str) -> bool:
    """Hosts an http:// server URL may reach without allow_insecure (docs/protocol.md §11.1).

    Loopback, private and link-local addresses, cluster-internal names and bare hostnames:
    places where the cleartext token does not cross the internet. The agent runner may use
    this to warn when allow_insecure lets a token go to any other host.
    """
    host = host.strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (
            host == "localhost"
            or host.endswith(_LOCAL_SUFFIXES)
            or (bool(host) and "." not in host)
        )
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOCAL_NETWORKS)


def _allow_insecure(configured: bool, environ: Mapping[str, str]) -> tuple[bool, str | None]:
    """The environment wins when set, so an operator can forbid (or allow) per deployment."""
    raw = environ.get(ALLOW_INSECURE_ENV)
    if raw is None:
        return configured, None
    return raw in ("true", "1"), raw


def _check_server_url(
    url: str, allow_insecure: bool, env_override: str | None, configured: bool
) -> str | None:
    """Return what is wrong with the server URL, or None."""
    if not url.startswith(_SERVER_SCHEMES):
        return f"must start with http:// or https://, got {_describe(url, ())}"
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # reading the port validates it
    except ValueError as error:
        return f"not a valid URL ({error})"
    if not host:
        return f"has no host, got {_describe(url, ())}"
    if url.startswith("https://") or allow_insecure or is_local_host(host):
        return None
    message = (
        f"http:// to the non-local host {host} would send the agent token in cleartext; "
        f"use https://, or set server.allow_insecure = true (or {ALLOW_INSECURE_ENV}=1)"
    )
    if env_override is not None and configured:
        message += f"; {ALLOW_INSECURE_ENV}={env_override} overrides server.allow_insecure"
    return message


def _build_server(
    model: _AgentServerSection, environ: Mapping[str, str], problems: list[Problem]
) -> ServerConnectionSettings:
    allow_insecure, env_override = _allow_insecure(model.allow_insecure, environ)
    url_problem = _check_server_url(model.url, allow_insecure, env_override, model.allow_insecure)
    if url_problem:
        problems.append(Problem(("server", "url"), url_problem))
    if not _TOKEN_CHARACTERS.fullmatch(model.agent_token):
        problems.append(
            Problem(
                ("server", "agent_token"),
                "contains whitespace or characters outside printable ASCII (a trailing "
                "newline from a secret file?); the token is dbw_ followed by 32 hex characters",
            )
        )
    public_key = model.public_key
    if public_key is not None:
        if _PUBLIC_KEY.fullmatch(public_key):
            public_key = public_key.lower()
        else:
            problems.append(
                Problem(
                    ("server", "public_key"),
                    "expected the server's Ed25519 public key as 64 hex characters, "
                    f"got {len(public_key)} characters",
                )
            )
    return ServerConnectionSettings(
        url=model.url,
        agent_token=model.agent_token,
        allow_insecure=allow_insecure,
        public_key=public_key,
    )


def _scope_name(kind: str, name: str, key: KeyPath, problems: list[Problem]) -> bool:
    """Check a name here rather than learn of it from a 400 at the first poll."""
    try:
        validate_scope_name(kind, name)
    except InvalidScopeNameError as error:
        problems.append(Problem(key, str(error)))
        return False
    return True


def _build_databases(
    tables: dict[str, dict[str, _AgentDatabaseSection]], problems: list[Problem]
) -> tuple[DatabaseSettings, ...]:
    """One DatabaseSettings per [databases.<db>.<env>], sorted so scopes are deterministic."""
    databases: list[DatabaseSettings] = []
    for db, environments in tables.items():
        if not _scope_name("database", db, ("databases", db), problems):
            continue
        if not environments:
            problems.append(
                Problem(("databases", db), f"no environments; add [databases.{db}.<environment>]")
            )
        for env, entry in environments.items():
            key: KeyPath = ("databases", db, env)
            if not _scope_name("environment", env, key, problems):
                continue
            if not entry.url.startswith(_DATABASE_SCHEMES):
                scheme = _SCHEME.match(entry.url)
                got = f'"{scheme.group()}"' if scheme else "no scheme"
                problems.append(
                    Problem(
                        (*key, "url"),
                        f"unsupported URL scheme {got}; supported: {', '.join(_DATABASE_SCHEMES)}",
                    )
                )
            databases.append(DatabaseSettings(Scope(db, env), entry.url, entry.migrations_dir))
    if not tables:
        problems.append(
            Problem(
                ("databases",),
                "at least one database is required; "
                "add [databases.<database>.<environment>] with a url",
            )
        )
    return tuple(sorted(databases, key=lambda d: d.scope))


def _check_timing(model: _AgentFile) -> list[Problem]:
    """Relations between keys that each look fine alone."""
    problems: list[Problem] = []
    lease_ms = model.lease_duration_secs * 1000
    if model.heartbeat_interval_ms * 3 >= lease_ms:
        problems.append(
            Problem(
                ("heartbeat_interval_ms",),
                f"must be less than lease_duration_secs*1000/3 ({lease_ms // 3} ms), got "
                f"{model.heartbeat_interval_ms}: three heartbeats must fit in a lease, "
                "so one lost heartbeat does not lose the job",
            )
        )
    if model.startup_retry_max_ms < model.startup_retry_initial_ms:
        problems.append(
            Problem(
                ("startup_retry_max_ms",),
                f"must be at least startup_retry_initial_ms ({model.startup_retry_initial_ms}), "
                f"got {model.startup_retry_max_ms}",
            )
        )
    return problems


def _hostname() -> str:
    try:
        return socket.gethostname() or "unknown"
    except OSError:
        return "unknown"


def _build(model: _AgentFile, path: Path, environ: Mapping[str, str]) -> AgentSettings:
    problems: list[Problem] = []
    operations, operations_configured = _parse_operations(model.operations, problems)
    server = _build_server(model.server, environ, problems)
    databases = _build_databases(model.databases, problems)
    problems.extend(_check_timing(model))
    metrics_listen = None
    if model.metrics_listen is not None:
        metrics_listen = parse_listen(model.metrics_listen)
        if metrics_listen is None:
            problems.append(
                Problem(
                    ("metrics_listen",),
                    f"expected {LISTEN_EXAMPLE}, got {model.metrics_listen!r}",
                )
            )
    if model.log_format not in LOG_FORMATS:
        problems.append(
            Problem(
                ("log_format",),
                f'expected "text" or "json", got {model.log_format!r}',
            )
        )
    if problems:
        raise config_error(path, problems)
    sync = model.schema_sync
    return AgentSettings(
        server=server,
        databases=databases,
        agent_id=model.agent_id if model.agent_id is not None else _hostname(),
        poll_interval_ms=model.poll_interval_ms,
        poll_wait_ms=model.poll_wait_ms,
        heartbeat_interval_ms=model.heartbeat_interval_ms,
        lease_duration_secs=model.lease_duration_secs,
        drain_timeout_secs=model.drain_timeout_secs,
        max_concurrent_tasks=model.max_concurrent_tasks,
        statement_timeout_secs=model.statement_timeout_secs,
        operations=operations,
        operations_configured=operations_configured,
        startup_retry_initial_ms=model.startup_retry_initial_ms,
        startup_retry_max_ms=model.startup_retry_max_ms,
        startup_max_wait_secs=model.startup_max_wait_secs,
        liveness_probe_path=model.liveness_probe_path,
        readiness_probe_path=model.readiness_probe_path,
        max_result_rows=model.max_result_rows,
        max_result_bytes=model.max_result_bytes,
        schema_sync=SchemaSyncSettings(sync.enabled, sync.sync_on_startup, sync.interval_secs),
        metrics_listen=metrics_listen,
        log_format=model.log_format,
    )


# --- loading ----------------------------------------------------------------------------


def load_agent_settings(path: Path, environ: Mapping[str, str]) -> AgentSettings:
    """Load the agent config at `path`, expanding `${VAR}` from `environ`.

    Raises ConfigError whose message has one line per problem, each naming the file and
    the key. `environ` is explicit (the runner passes os.environ) so loading is testable
    and never depends on the process it happens to run in.
    """
    document = load_document(path, environ)
    return _build(_SHAPE.validate(document, path), path, environ)


def accepted_keys() -> frozenset[str]:
    """Every key the agent's file accepts, dotted (`databases.*.*.url`): the keys
    docs/agent.md §1 documents, as a test holds them."""
    return _SHAPE.accepted_keys()


# --- rendering --------------------------------------------------------------------------

_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """A TOML basic string; `${` is written `$${` so the output loads back to the same value."""
    out = []
    for char in text.replace("${", "$${"):
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: bool | int | str | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    return "[" + ", ".join(_toml_string(item) for item in value) + "]"


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _redact_token(token: str) -> str:
    """Keep `dbw_` and a few hex digits so an operator can tell tokens apart, no more."""
    if token.startswith("dbw_") and len(token) >= 24:
        return token[:8] + "...redacted"
    return "<redacted>"


def redact_url(url: str) -> str:
    """Replace the password (userinfo or a `password=` query parameter) with `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = "&".join(
        f"{name}=***" if name.lower().endswith("password") and sep else f"{name}{sep}{value}"
        for name, sep, value in (item.partition("=") for item in parts.query.split("&"))
    )
    return parts._replace(netloc=netloc, query=query).geturl()


def _assign(lines: list[str], name: str, value: bool | int | str | Sequence[str]) -> None:
    lines.append(f"{name} = {_toml_value(value)}")


def render_effective_config(settings: AgentSettings) -> str:
    """The effective configuration as TOML: every key, defaults included, secrets redacted.

    The text parses with tomllib and loads back as an agent config (with the redacted
    token), so it doubles as a template for another agent.
    """
    lines = [
        "# Effective dbward agent configuration: every key with its value, defaults included.",
        "# Secrets are redacted: the agent token and database passwords.",
    ]
    skip = {"server", "databases", "schema_sync", "operations", "operations_configured"}
    for field in dataclasses.fields(settings):
        if field.name == "metrics_listen":
            if settings.metrics_listen is None:
                lines.append("# metrics_listen: not set (no metrics served)")
            else:
                _assign(lines, "metrics_listen", str(settings.metrics_listen))
        elif field.name == "operations":
            if not settings.operations_configured:
                lines.append("# operations: not set in the file, so the defaults")
            _assign(lines, "operations", [op.value for op in settings.operations])
        elif field.name not in skip:
            _assign(lines, field.name, getattr(settings, field.name))
    lines += ["", "[schema_sync]"]
    for name, value in dataclasses.asdict(settings.schema_sync).items():
        _assign(lines, name, value)
    server = settings.server
    lines += ["", "[server]"]
    _assign(lines, "url", redact_url(server.url))
    _assign(lines, "agent_token", _redact_token(server.agent_token))
    _assign(lines, "allow_insecure", server.allow_insecure)
    if server.public_key is None:
        lines.append("# public_key: not set (the server's key is not pinned)")
    else:
        _assign(lines, "public_key", server.public_key)
    for database in settings.databases:
        scope = database.scope
        lines += ["", f"[databases.{_toml_key(scope.database)}.{_toml_key(scope.environment)}]"]
        _assign(lines, "url", redact_url(database.url))
        if database.migrations_dir is None:
            lines.append("# migrations_dir: not set")
        else:
            _assign(lines, "migrations_dir", database.migrations_dir)
    return "\n".join(lines) + "\n"
