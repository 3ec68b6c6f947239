"""`dbward migrate create|up|down|status|repair` (docs/migrations.md).

`create` only writes a file. The others read the migrations directory, build the request
detail (`domain.shared.migration_files`), submit it like any request, and then:

* an auto-approved request is waited for (`GET /api/requests/{id}?wait=…` until it ends,
  at most `--timeout` seconds → exit 124) and its result printed (exit 0, or 1 when the
  migration failed);
* a pending one prints who must approve it and exits 2 without waiting;
* a rejected, cancelled, expired or lost one exits 1.

`up`, `down` and `repair` change a database: in human mode on a terminal they ask
`Continue? [y/N]`; elsewhere they need `-y/--yes`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from adapters.cli_client.api_client import ApiClient, ApiError, JsonObject
from adapters.config.client import ClientConfigError, resolve_client_config
from domain.shared.migration_files import (
    NEW_FILE_TEMPLATE,
    MigrationDetailError,
    MigrationFile,
    build_detail,
    detail_json,
    new_migration_file_name,
    parse_migration_files,
)
from entrypoints.admin import output
from entrypoints.admin.output import ConfigOption, FormatOption, Output, OutputFormat

migrate_app = typer.Typer(
    name="migrate",
    help="Create migration files and run them through dbward (dbmate format).",
    no_args_is_help=True,
)

DEFAULT_DIR = Path("migrations")
DEFAULT_ENVIRONMENT = "development"
DEFAULT_TIMEOUT_SECS = 600
#: How long one `?wait=` call holds; below the client's 30 s read timeout.
_WAIT_STEP_SECS = 20
#: The least time between two status reads when the server does not hold them.
_MIN_PAUSE_SECS = 0.5
EXIT_PENDING = 2
EXIT_TIMEOUT = 124
#: Statuses after which nothing runs without someone acting.
_DONE = frozenset({"executed", "failed"})
_STOPPED = frozenset({"rejected", "cancelled", "expired", "execution_lost"})

DirOption = Annotated[
    Path, typer.Option("--dir", help="The migrations directory.", show_default=True)
]
DatabaseOption = Annotated[
    str | None, typer.Option("--database", "-d", help="Target database (required).")
]
EnvironmentOption = Annotated[
    str, typer.Option("--environment", "-e", help="Target environment.", show_default=True)
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (audited).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
TimeoutOption = Annotated[
    int,
    typer.Option("--timeout", min=1, help="Seconds to wait for the result (then exit 124)."),
]
KeyOption = Annotated[
    str | None, typer.Option("--idempotency-key", help="Makes a retried submit safe.")
]


class RepairActionOption(StrEnum):
    MARK_APPLIED = "mark-applied"
    REMOVE = "remove"


# --- files --------------------------------------------------------------------------------


def read_migrations(directory: Path, *, missing_ok: bool = False) -> list[MigrationFile]:
    """The migrations of `directory` (its `*.sql` files), ascending by version."""
    if not directory.is_dir():
        if missing_ok:
            return []
        raise MigrationDetailError(f"migrations directory not found: {directory}")
    files = [
        (path.name, path.read_text(encoding="utf-8"))
        for path in directory.iterdir()
        if path.suffix == ".sql" and path.is_file()
    ]
    return parse_migration_files(files)


@migrate_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What the migration does, e.g. add_users.")],
    directory: DirOption = DEFAULT_DIR,
    output_format: FormatOption = None,
) -> None:
    """Write `<dir>/<UTC timestamp>_<NAME>.sql` with empty up and down sections (local only)."""
    out = Output(output_format or OutputFormat.HUMAN)
    try:
        existing = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        file_name = new_migration_file_name(name, datetime.now(UTC), existing)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name
        with path.open("x", encoding="utf-8") as handle:
            handle.write(NEW_FILE_TEMPLATE)
    except MigrationDetailError as exc:
        out.fail("validation", str(exc))
    except OSError as exc:
        out.fail("io", f"cannot write the migration file: {exc}")
    data = {"path": str(path), "version": file_name.split("_", 1)[0]}
    if out.human:
        out.data(str(path))
    else:
        out.envelope({"ok": True, "data": data})
    raise typer.Exit(0)


# --- submitting and waiting ---------------------------------------------------------------


def _confirm(out: Output, yes: bool, what: str) -> None:
    if yes:
        return
    if out.human and sys.stdin.isatty():
        if typer.confirm(f"{what}. Continue?", default=False, err=True):
            return
        out.fail("aborted", "aborted")
    out.fail("confirmation_required", "confirmation required: pass -y/--yes")


def _client(out: Output, config: Path | None) -> ApiClient:
    try:
        client_config = resolve_client_config(config, os.environ, cwd=Path.cwd(), home=_home())
    except ClientConfigError as exc:
        out.fail("config", str(exc))
    for warning in client_config.warnings:
        out.warning(warning)
    return output.api_client_factory(client_config)


def _home() -> Path | None:
    try:
        return Path.home()
    except RuntimeError:
        return None


def _exit(out: Output, code: int, error: str, message: str, data: object) -> NoReturn:
    """Exit `code` with `{"ok": false, "data": data, "error": …}` in json/quiet mode."""
    if out.human:
        typer.echo(f"error: {message}", err=True)
    else:
        out.envelope({"ok": False, "data": data, "error": {"code": error, "message": message}})
    raise typer.Exit(code)


def submit_and_wait(
    out: Output,
    client: ApiClient,
    body: JsonObject,
    timeout_secs: int,
) -> JsonObject:
    """Submit, then wait for the result of an auto-approved request.

    Returns `{"request_id", "status", "result"}` when the migration ran; exits 2 (pending),
    1 (stopped or failed) or 124 (timeout) otherwise.
    """
    created = client.create_request(body)
    request_id = str(created.get("id"))
    status = str(created.get("status"))
    out.status(f"Request {request_id}: {status}")
    if status in ("pending", "approved"):
        approvers = created.get("approvers") or []
        if out.human:
            typer.echo(f"Request {request_id} requires approval", err=True)
            if approvers:
                typer.echo(f"Approvers: {output.display(approvers)}", err=True)
            typer.echo(f"hint: once approved, run `dbward request resume {request_id}`", err=True)
        data = {"request_id": request_id, "status": status, "approvers": approvers}
        if not out.human:
            out.envelope(
                {
                    "ok": False,
                    "data": data,
                    "error": {
                        "code": "pending_approval",
                        "message": f"request {request_id} requires approval",
                    },
                }
            )
        raise typer.Exit(EXIT_PENDING)
    deadline = time.monotonic() + timeout_secs
    last = status
    while status not in _DONE:
        if status in _STOPPED:
            _exit(out, 1, status, f"request {request_id} is {status}", {"request_id": request_id})
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _exit(
                out,
                EXIT_TIMEOUT,
                "timeout",
                f"no result after {timeout_secs} s; request {request_id} is {status}",
                {"request_id": request_id, "status": status},
            )
        asked = time.monotonic()
        current = client.get_request(request_id, min(_WAIT_STEP_SECS, max(1, int(remaining))))
        status = str(current.get("status"))
        if status == last and time.monotonic() - asked < _MIN_PAUSE_SECS:
            # The server answered at once without news (draining, or no long-poll): pace.
            time.sleep(_MIN_PAUSE_SECS)
        if status != last:
            hint = current.get("queue_hint")
            out.status(f"Request {request_id}: {status}" + (f" ({hint})" if hint else ""))
            last = status
    result = client.request_result(request_id)
    data = {"request_id": request_id, "status": status, "result": result.get("result_data")}
    if result.get("success") is not True:
        message = str(result.get("error_message") or "the migration failed")
        if out.human and isinstance(result.get("result_data"), dict):
            typer.echo(json.dumps(result["result_data"]), err=True)
        _exit(out, 1, "execution_failed", message, data)
    return data


def _prepared(out: Output, prepare: Callable[[], JsonObject]) -> JsonObject:
    try:
        return prepare()
    except MigrationDetailError as exc:
        out.fail("validation", str(exc))
    except OSError as exc:
        out.fail("io", f"cannot read the migrations: {exc}")


def _submitted(out: Output, config: Path | None, body: JsonObject, timeout: int) -> JsonObject:
    try:
        with _client(out, config) as client:
            return submit_and_wait(out, client, body, timeout)
    except ApiError as exc:
        out.fail(exc.code, exc.message, exc.hint)


def _printed(
    out: Output, data: JsonObject, render: Callable[[JsonObject, Output], None]
) -> NoReturn:
    if out.human:
        render(data, out)
    else:
        out.envelope({"ok": True, "data": data})
    raise typer.Exit(0)


def _run(
    output_format: OutputFormat | None,
    config: Path | None,
    prepare: Callable[[], JsonObject],
    timeout_secs: int,
    render: Callable[[JsonObject, Output], None],
    confirm: str,
    yes: bool,
) -> NoReturn:
    out = Output(output_format or OutputFormat.HUMAN)
    body = _prepared(out, prepare)
    _confirm(out, yes, confirm)
    _printed(out, _submitted(out, config, body, timeout_secs), render)


def _body(
    database: str | None,
    environment: str,
    operation: str,
    detail: str,
    reason: str | None,
    idempotency_key: str | None,
    emergency: bool = False,
) -> JsonObject:
    if not database:
        raise MigrationDetailError("--database is required")
    body: JsonObject = {
        "database": database,
        "environment": environment,
        "operation": operation,
        "detail": detail,
    }
    if reason is not None:
        body["reason"] = reason
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if emergency:
        body["emergency"] = True
    return body


def _versions(data: JsonObject, key: str) -> list[str]:
    result = data.get("result")
    values = result.get(key) if isinstance(result, dict) else None
    return [str(v) for v in values] if isinstance(values, list) else []


# --- up / down ----------------------------------------------------------------------------


@migrate_app.command("up")
def up(
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Apply at most N pending versions.")
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    database: DatabaseOption = None,
    environment: EnvironmentOption = DEFAULT_ENVIRONMENT,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    yes: YesOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Apply the pending migrations (all, or the first N), oldest first."""

    def prepare() -> JsonObject:
        detail = build_detail(read_migrations(directory), "up", count)
        return _body(
            database, environment, "migrate_up", detail_json(detail), reason, idempotency_key
        )

    def render(data: JsonObject, out: Output) -> None:
        applied = _versions(data, "applied")
        out.data(
            f"Applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "Nothing to apply: every migration is applied."
        )

    _run(output_format, config, prepare, timeout, render, "Apply migrations", yes)


@migrate_app.command("down")
def down(
    count: Annotated[
        int, typer.Option("--count", min=1, help="Revert the newest N applied versions.")
    ] = 1,
    directory: DirOption = DEFAULT_DIR,
    database: DatabaseOption = None,
    environment: EnvironmentOption = DEFAULT_ENVIRONMENT,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    yes: YesOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Revert the newest applied migration (or N of them), newest first."""

    def prepare() -> JsonObject:
        detail = build_detail(read_migrations(directory), "down", count)
        return _body(
            database, environment, "migrate_down", detail_json(detail), reason, idempotency_key
        )

    def render(data: JsonObject, out: Output) -> None:
        reverted = _versions(data, "reverted")
        out.data(
            f"Reverted {len(reverted)} migration(s): {', '.join(reverted)}"
            if reverted
            else "Nothing to revert."
        )

    _run(output_format, config, prepare, timeout, render, "Revert migrations", yes)


# --- status -------------------------------------------------------------------------------


def status_rows(migrations: list[MigrationFile], applied: list[str]) -> list[dict[str, Any]]:
    """Every version, local or applied, ascending: `{"version", "file", "applied"}`."""
    files = {m.version: m.file_name for m in migrations}
    done = set(applied)
    versions = sorted(set(files) | done, key=lambda v: (int(v) if v.isdigit() else -1, v))
    return [{"version": v, "file": files.get(v), "applied": v in done} for v in versions]


@migrate_app.command("status")
def status(
    directory: DirOption = DEFAULT_DIR,
    database: DatabaseOption = None,
    environment: EnvironmentOption = DEFAULT_ENVIRONMENT,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """List applied and pending versions (a migrate_status request)."""
    out = Output(output_format or OutputFormat.HUMAN)
    local: list[MigrationFile] = []

    def prepare() -> JsonObject:
        local.extend(read_migrations(directory, missing_ok=True))
        return _body(database, environment, "migrate_status", "", reason, idempotency_key)

    data = _submitted(out, config, _prepared(out, prepare), timeout)
    applied = _versions(data, "applied_versions")
    data["applied_versions"] = applied
    data["migrations"] = status_rows(local, applied)
    _printed(out, data, _render_status)


def _render_status(data: JsonObject, out: Output) -> None:
    rows = data["migrations"]
    if not rows:
        out.status("No migrations.")
        return
    out.table(
        ["VERSION", "STATUS", "FILE"],
        [
            [
                row["version"],
                "applied" if row["applied"] else "pending",
                output.display(row["file"]),
            ]
            for row in rows
        ],
    )
    pending = sum(1 for row in rows if not row["applied"])
    out.status(f"{len(rows) - pending} applied, {pending} pending")


# --- repair -------------------------------------------------------------------------------


@migrate_app.command("repair")
def repair(
    action: Annotated[
        RepairActionOption,
        typer.Option("--action", help="mark-applied: record a version; remove: forget it."),
    ],
    version: Annotated[str, typer.Option("--version", help="The version to fix.")],
    emergency: Annotated[
        bool, typer.Option("--emergency", help="Required: repair is break-glass only.")
    ] = False,
    database: DatabaseOption = None,
    environment: EnvironmentOption = DEFAULT_ENVIRONMENT,
    reason: ReasonOption = None,
    idempotency_key: KeyOption = None,
    yes: YesOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Fix one row of schema_migrations by hand (emergency only; needs --reason)."""

    def prepare() -> JsonObject:
        if not emergency:
            raise MigrationDetailError("migrate repair is emergency-only: pass --emergency")
        if not (reason and reason.strip()):
            raise MigrationDetailError("migrate repair needs --reason")
        detail = json.dumps(
            {"action": action.value.replace("-", "_"), "version": version},
            sort_keys=True,
            separators=(",", ":"),
        )
        return _body(database, environment, "migrate_repair", detail, reason, idempotency_key, True)

    def render(data: JsonObject, out: Output) -> None:
        out.data(f"Repaired: {action.value} {version}")

    _run(output_format, config, prepare, timeout, render, f"Repair version {version}", yes)
