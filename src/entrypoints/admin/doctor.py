"""`dbward doctor`: a checklist of what a working setup needs (docs/server.md §8.4).

1. the client config resolves (server URL and token, docs/server.md §8.3), with its warnings;
   where none exists at all and `--agent`/`--server` was given, the client checks are
   skipped: a database host checks its agent config without a client config;
2. the server answers `/health`, reports a version (compared with this CLI's) and is `/ready`;
3. the token is accepted (`GET /api/me`);
4. with `--agent-config PATH`: that agent config loads as `dbward agent --check-config` loads
   it, and each of its databases accepts a connection within `--timeout` seconds;
5. with `--server PATH`: that server config loads as `dbward server` loads it, and what can
   be checked without starting it is: the state dir and the result directory exist (or can
   be created) and are writable, and a SQLite store's directory is one of them.

Each check is `ok`, `warn` (worth knowing, not a failure), `fail` or `skip` (an earlier
failure makes it meaningless). Exit 0 when nothing failed, 2 when something did; in json and
quiet mode the one line is `{"ok": false, "data": {"checks": …}, "error": …}` then.
Database URLs are shown with their password replaced and connection errors come redacted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

import typer

from adapters.cli_client.api_client import ApiClient, ApiError
from adapters.config.agent import load_agent_settings, redact_url
from adapters.config.client import ClientConfig, ClientConfigError, NoServerConfigured
from application.agent.settings import DatabaseSettings
from domain.shared.errors import DbwardError
from entrypoints.admin.output import (
    ConfigOption,
    FormatOption,
    MergeGlobalOption,
    Output,
    OutputFormat,
    load_client_config,
)
from entrypoints.agent.database_drivers import open_database
from entrypoints.version import package_version

Status = Literal["ok", "warn", "fail", "skip"]
DEFAULT_TIMEOUT_SECS = 5.0
EXIT_ISSUES = 2
_MARKS: dict[str, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def _default_client(config: ClientConfig, timeout_secs: float) -> ApiClient:
    return ApiClient(
        config.server_url,
        config.token,
        timeout=timeout_secs,
        user_agent=f"dbward-cli/{package_version()}",
    )


#: The seam tests replace to run the checks against an `httpx.MockTransport`.
doctor_client_factory: Callable[[ClientConfig, float], ApiClient] = _default_client


# --- the checks -------------------------------------------------------------------------------


def check_client_config(
    config_path: Path | None, *, merge_global: bool = False, optional: bool = False
) -> tuple[list[Check], ClientConfig | None]:
    """`optional`: only other configs were asked about, so a machine with no client
    config at all (a database host checking its agent config) is skipped, not failed."""
    try:
        config = load_client_config(config_path, merge_global=merge_global)
    except NoServerConfigured as exc:
        status: Status = "skip" if optional else "fail"
        return [Check("client config", status, str(exc))], None
    except ClientConfigError as exc:
        return [Check("client config", "fail", str(exc))], None
    checks = [
        Check(
            "client config",
            "ok",
            f"server {config.server_url} (from {config.url_source}), "
            f"token from {config.token_source}",
        )
    ]
    if not config.allow_insecure:
        checks += [Check("transport", "warn", warning) for warning in config.warnings]
    return checks, config


def check_server(client: ApiClient) -> list[Check]:
    skipped = ["server version", "server ready", "token"]
    try:
        health = client.health()
    except ApiError as exc:
        return [Check("server reachable", "fail", exc.message)] + [
            Check(name, "skip", "the server did not answer") for name in skipped
        ]
    checks = [Check("server reachable", "ok", f"{client.base_url}/health answered")]
    ours, theirs = package_version(), health.get("version")
    if not isinstance(theirs, str):
        checks.append(Check("server version", "warn", "the server reports no version"))
    elif theirs == ours:
        checks.append(Check("server version", "ok", f"{theirs} (same as this CLI)"))
    else:
        checks.append(Check("server version", "warn", f"server {theirs}, this CLI {ours}"))
    try:
        ready = client.ready()
        checks.append(Check("server ready", "ok", f"status {ready.get('status', 'ok')}"))
    except ApiError as exc:
        checks.append(Check("server ready", "fail", exc.message))
    try:
        me = client.me()
    except ApiError as exc:
        detail = exc.message + (f" ({exc.hint})" if exc.hint else "")
        checks.append(Check("token", "fail", f"not accepted: {detail}"))
    else:
        roles = [r.get("name") for r in me.get("roles") or [] if isinstance(r, dict)]
        who = f"{me.get('subject_id', '?')} ({me.get('subject_type', '?')})"
        checks.append(Check("token", "ok", f"{who}, roles: {', '.join(map(str, roles)) or 'none'}"))
    return checks


def _redact_secrets(text: str, url: str) -> str:
    password = urlsplit(url).password
    for secret in {password, unquote(password)} if password else set():
        if secret:
            text = text.replace(secret, "***")
    return text


def check_database(database: DatabaseSettings, timeout_secs: float) -> Check:
    name = f"database {database.scope}"
    where = redact_url(database.url)
    try:
        port = open_database(database.url)
        try:
            port.connect(timeout_secs)
        finally:
            port.close()
    except DbwardError as exc:
        return Check(name, "fail", f"{where}: {_redact_secrets(str(exc), database.url)}")
    except Exception as exc:  # a driver's surprise is still a failing check
        reason = _redact_secrets(f"{type(exc).__name__}: {exc}", database.url)
        return Check(name, "fail", f"{where}: {reason}")
    return Check(name, "ok", f"{where}: connected")


def check_agent_config(path: Path, timeout_secs: float) -> list[Check]:
    try:
        settings = load_agent_settings(path, os.environ)
    except DbwardError as exc:
        return [Check("agent config", "fail", f"{path}: {exc}")]
    scopes = ", ".join(str(scope) for scope in settings.scopes)
    checks = [Check("agent config", "ok", f"{path}: valid; databases {scopes}")]
    databases = settings.databases
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(databases)))) as pool:
        checks += list(pool.map(lambda db: check_database(db, timeout_secs), databases))
    return checks


def _writable_dir(name: str, directory: Path) -> Check:
    """A directory the server writes to: there and writable, or creatable where it goes."""
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return Check(name, "fail", f"{directory}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(name, "fail", f"{directory}: {existing} is not writable by this user")
    if existing != directory:
        return Check(name, "ok", f"{directory}: missing, the server creates it")
    return Check(name, "ok", f"{directory}: writable")


def check_server_config(path: Path) -> list[Check]:
    """The server config as `dbward server` loads it, and its directories (offline only)."""
    # Lazy: the server config loader pulls in the server's domain (sqlglot, workflows).
    from adapters.config.server import load_server_settings  # noqa: PLC0415

    try:
        settings = load_server_settings(path, os.environ)
    except DbwardError as exc:
        return [Check("server config", "fail", str(exc))]  # the loader names the file
    databases = ", ".join(str(scope) for db in settings.databases for scope in db.scopes)
    checks = [
        Check(
            "server config",
            "ok",
            f"{path}: valid; {len(settings.workflows)} workflow(s); "
            f"databases {databases or 'none'}",
        )
    ]
    checks += [Check("server config warning", "warn", warning) for warning in settings.warnings]
    if not settings.databases:
        checks.append(
            Check("server databases", "warn", "no [[databases]]: nothing can be requested")
        )
    checks.append(_writable_dir("server state dir", settings.state_dir))
    checks.append(_writable_dir("server results dir", settings.result_storage.root_dir))
    store = settings.store
    checks.append(
        Check("server store", "ok", "SQLite in the state dir")
        if store.is_sqlite
        else Check("server store", "ok", f"{redact_url(store.url)} (not contacted offline)")
    )
    return checks


# --- the command ------------------------------------------------------------------------------


def render_checks(checks: Sequence[Check], out: Output) -> None:
    width = max(len(check.name) for check in checks)
    for check in checks:
        out.data(f"{_MARKS[check.status]} {check.name:<{width}}  {check.detail}")


def doctor(
    config: ConfigOption = None,
    agent_config: Annotated[
        Path | None,
        typer.Option(
            "--agent-config",
            "--agent",
            help="Also check this agent config and connect to each of its databases.",
            show_default=False,
        ),
    ] = None,
    server_config: Annotated[
        Path | None,
        typer.Option(
            "--server",
            "--server-config",
            help="Also check this server config file (offline: no server is started).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.5, help="Seconds each server call or connection may take."),
    ] = DEFAULT_TIMEOUT_SECS,
    output_format: FormatOption = None,
    merge_global: MergeGlobalOption = False,
) -> None:
    """Check the client config, the server, the token; optionally agent and server configs."""
    out = Output(output_format or OutputFormat.HUMAN)
    checks, client_config = check_client_config(
        config,
        merge_global=merge_global,
        optional=agent_config is not None or server_config is not None,
    )
    if client_config is None:
        checks += [
            Check(name, "skip", "no usable client config")
            for name in ("server reachable", "server version", "server ready", "token")
        ]
    else:
        with doctor_client_factory(client_config, timeout) as client:
            checks += check_server(client)
    if agent_config is not None:
        checks += check_agent_config(agent_config, timeout)
    if server_config is not None:
        checks += check_server_config(server_config)

    failed = [check for check in checks if check.status == "fail"]
    data = {"checks": [asdict(check) for check in checks], "issues": len(failed)}
    summary = (
        f"{len(failed)} issue(s): {', '.join(check.name for check in failed)}"
        if failed
        else "all checks passed"
    )
    if out.human:
        render_checks(checks, out)
        out.status(summary)
    elif failed:
        error = {"code": "doctor_issues", "message": summary}
        out.envelope({"ok": False, "data": data, "error": error})
    else:
        out.envelope({"ok": True, "data": data})
    raise typer.Exit(EXIT_ISSUES if failed else 0)
