"""`dbward migrate create|up|down|status|repair` (docs/migrations.md).

`create` only writes a file. The others read the migrations directory, build the request
detail (`domain.shared.migration_files`), submit it like any request and follow it as
`dbward execute` does (`entrypoints.admin.waiting`): an auto-approved request is waited for
(at most `--timeout` seconds → exit 124) and its result printed (exit 0, or 1 when the
migration failed); a pending one exits 2 naming its approvers; a rejected, cancelled,
expired or lost one exits 1.

The database, environment and directory come from the flags, else the client config
(`default_database`, `default_environment`, `[databases.<db>] migrations_dir`,
`migrations_dir`). `up`, `down` and `repair` change a database: in human mode on a terminal
they ask `Continue? [y/N]`; elsewhere they need `-y/--yes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from adapters.cli_client.api_client import ApiError, JsonObject
from adapters.config.client import DEFAULT_MIGRATIONS_DIR, ClientConfig, ClientConfigError
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
from entrypoints.admin.output import (
    ConfigOption,
    FormatOption,
    MergeGlobalOption,
    Output,
    OutputFormat,
    client_session,
    confirm,
    usage_error,
)
from entrypoints.admin.requests import (
    IdempotencyKeyOption,
    RepoOption,
    ShareWithOption,
    TicketOption,
    request_metadata,
)
from entrypoints.admin.waiting import follow_created

migrate_app = typer.Typer(
    name="migrate",
    help="Create migration files and run them through dbward (dbmate format).",
    no_args_is_help=True,
)

DEFAULT_TIMEOUT_SECS = 600

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="The migrations directory (default: the client config's, else ./migrations).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database", "-d", help="Target database (default: default_database)."),
]
EnvironmentOption = Annotated[
    str | None,
    typer.Option(
        "--environment",
        "-e",
        help="Target environment (default: default_environment, else development).",
        show_default=False,
    ),
]
ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (audited).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
TimeoutOption = Annotated[
    int,
    typer.Option("--timeout", min=1, help="Seconds to wait for the result (then exit 124)."),
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
    directory: Annotated[
        Path, typer.Option("--dir", help="The migrations directory.", show_default=True)
    ] = Path(DEFAULT_MIGRATIONS_DIR),
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


class Submission:
    """What every migrate command but `create` sends besides its operation and detail."""

    def __init__(
        self,
        reason: str | None = None,
        idempotency_key: str | None = None,
        ticket: str | None = None,
        repo: str | None = None,
        share_with: list[str] | None = None,
        emergency: bool = False,
    ) -> None:
        self.reason = reason
        self.idempotency_key = idempotency_key
        self.metadata = request_metadata(ticket, repo)
        self.share_with = output.unique(share_with or [])
        self.emergency = emergency

    def body(self, database: str, environment: str, operation: str, detail: str) -> JsonObject:
        body: JsonObject = {
            "database": database,
            "environment": environment,
            "operation": operation,
            "detail": detail,
        }
        optional: dict[str, Any] = {
            "reason": self.reason,
            "idempotency_key": self.idempotency_key,
            "metadata": self.metadata,
            "share_with": self.share_with or None,
            "emergency": self.emergency or None,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return body


class Target:
    """The database, environment and migrations directory a command works on."""

    def __init__(
        self,
        config: ClientConfig,
        database: str | None,
        environment: str | None,
        directory: Path | None,
    ) -> None:
        self.database = config.database(database)
        self.environment = config.environment(environment)
        self.directory = config.migrations_directory(directory, self.database)


def _run(
    ctx: typer.Context,
    options: tuple[Path | None, OutputFormat | None, bool],
    where: tuple[str | None, str | None, Path | None],
    prepare: Callable[[Target], tuple[str, str]],
    submission: Submission,
    timeout_secs: int,
    confirm_as: tuple[str, bool] | None,
) -> tuple[Output, JsonObject]:
    """Resolve, prepare, confirm, submit and follow; `{"request_id", "status", "result"}`.

    `prepare` returns (operation, detail) from the target; `confirm_as` is the question and
    `-y` for the commands that change the database.
    """
    config, output_format, merge_global = options
    out, client_config = client_session(ctx, config, output_format, merge_global=merge_global)
    try:
        target = Target(client_config, *where)
    except ClientConfigError as exc:
        usage_error(str(exc), "--database")
    try:
        operation, detail = prepare(target)
    except MigrationDetailError as exc:
        out.fail("validation", str(exc))
    except OSError as exc:
        out.fail("io", f"cannot read the migrations: {exc}")
    if confirm_as is not None:
        question, yes = confirm_as
        confirm(out, yes, f"{question} on {target.database}/{target.environment}")
    body = submission.body(target.database, target.environment, operation, detail)
    try:
        with output.api_client_factory(client_config) as client:
            created = client.create_request(body)
            request, result = follow_created(out, client, created, timeout_secs)
    except ApiError as exc:
        out.fail(exc.code, exc.message, exc.hint)
    data: JsonObject = {
        "request_id": request.get("id"),
        "status": request.get("status"),
        "result": result.get("result_data"),
    }
    if result.get("success") is not True:
        if out.human and isinstance(result.get("result_data"), dict):
            typer.echo(json.dumps(result["result_data"]), err=True)
        message = str(result.get("error_message") or "the migration failed")
        out.fail("execution_failed", message, data=data)
    return out, data


def _printed(
    out: Output, data: JsonObject, render: Callable[[JsonObject, Output], None]
) -> NoReturn:
    if out.human:
        render(data, out)
    else:
        out.envelope({"ok": True, "data": data})
    raise typer.Exit(0)


def _versions(data: JsonObject, key: str) -> list[str]:
    result = data.get("result")
    values = result.get(key) if isinstance(result, dict) else None
    return [str(v) for v in values] if isinstance(values, list) else []


# --- up / down ----------------------------------------------------------------------------


@migrate_app.command("up")
def up(
    ctx: typer.Context,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Apply at most N pending versions.")
    ] = None,
    directory: DirOption = None,
    database: DatabaseOption = None,
    environment: EnvironmentOption = None,
    reason: ReasonOption = None,
    ticket: TicketOption = None,
    repo: RepoOption = None,
    idempotency_key: IdempotencyKeyOption = None,
    share_with: ShareWithOption = None,
    yes: YesOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    merge_global: MergeGlobalOption = False,
) -> None:
    """Apply the pending migrations (all, or the first N), oldest first."""

    def prepare(target: Target) -> tuple[str, str]:
        return "migrate_up", detail_json(
            build_detail(read_migrations(target.directory), "up", count)
        )

    out, data = _run(
        ctx,
        (config, output_format, merge_global),
        (database, environment, directory),
        prepare,
        Submission(reason, idempotency_key, ticket, repo, share_with),
        timeout,
        ("Apply migrations", yes),
    )

    def render(data: JsonObject, out: Output) -> None:
        applied = _versions(data, "applied")
        out.data(
            f"Applied {len(applied)} migration(s): {', '.join(applied)}"
            if applied
            else "Nothing to apply: every migration is applied."
        )

    _printed(out, data, render)


@migrate_app.command("down")
def down(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Option("--count", min=1, help="Revert the newest N applied versions.")
    ] = 1,
    directory: DirOption = None,
    database: DatabaseOption = None,
    environment: EnvironmentOption = None,
    reason: ReasonOption = None,
    ticket: TicketOption = None,
    repo: RepoOption = None,
    idempotency_key: IdempotencyKeyOption = None,
    yes: YesOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    merge_global: MergeGlobalOption = False,
) -> None:
    """Revert the newest applied migration (or N of them), newest first."""

    def prepare(target: Target) -> tuple[str, str]:
        detail = build_detail(read_migrations(target.directory), "down", count)
        return "migrate_down", detail_json(detail)

    out, data = _run(
        ctx,
        (config, output_format, merge_global),
        (database, environment, directory),
        prepare,
        Submission(reason, idempotency_key, ticket, repo),
        timeout,
        ("Revert migrations", yes),
    )

    def render(data: JsonObject, out: Output) -> None:
        reverted = _versions(data, "reverted")
        out.data(
            f"Reverted {len(reverted)} migration(s): {', '.join(reverted)}"
            if reverted
            else "Nothing to revert."
        )

    _printed(out, data, render)


# --- status -------------------------------------------------------------------------------


def status_rows(migrations: list[MigrationFile], applied: list[str]) -> list[dict[str, Any]]:
    """Every version, local or applied, ascending: `{"version", "file", "applied"}`."""
    files = {m.version: m.file_name for m in migrations}
    done = set(applied)
    versions = sorted(set(files) | done, key=lambda v: (int(v) if v.isdigit() else -1, v))
    return [{"version": v, "file": files.get(v), "applied": v in done} for v in versions]


@migrate_app.command("status")
def status(
    ctx: typer.Context,
    directory: DirOption = None,
    database: DatabaseOption = None,
    environment: EnvironmentOption = None,
    reason: ReasonOption = None,
    ticket: TicketOption = None,
    repo: RepoOption = None,
    idempotency_key: IdempotencyKeyOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    merge_global: MergeGlobalOption = False,
) -> None:
    """List applied and pending versions (a migrate_status request)."""
    local: list[MigrationFile] = []

    def prepare(target: Target) -> tuple[str, str]:
        local.extend(read_migrations(target.directory, missing_ok=True))
        return "migrate_status", ""

    out, data = _run(
        ctx,
        (config, output_format, merge_global),
        (database, environment, directory),
        prepare,
        Submission(reason, idempotency_key, ticket, repo),
        timeout,
        None,
    )
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
    ctx: typer.Context,
    action: Annotated[
        RepairActionOption,
        typer.Option("--action", help="mark-applied: record a version; remove: forget it."),
    ],
    version: Annotated[str, typer.Option("--version", help="The version to fix.")],
    emergency: Annotated[
        bool, typer.Option("--emergency", help="Required: repair is break-glass only.")
    ] = False,
    database: DatabaseOption = None,
    environment: EnvironmentOption = None,
    reason: ReasonOption = None,
    ticket: TicketOption = None,
    repo: RepoOption = None,
    idempotency_key: IdempotencyKeyOption = None,
    yes: YesOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_SECS,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    merge_global: MergeGlobalOption = False,
) -> None:
    """Fix one row of schema_migrations by hand (emergency only; needs --reason)."""
    if not emergency:
        usage_error("migrate repair is emergency-only: pass --emergency", "--emergency")
    if not (reason and reason.strip()):
        usage_error("migrate repair needs --reason", "--reason")

    def prepare(_target: Target) -> tuple[str, str]:
        detail = json.dumps(
            {"action": action.value.replace("-", "_"), "version": version},
            sort_keys=True,
            separators=(",", ":"),
        )
        return "migrate_repair", detail

    out, data = _run(
        ctx,
        (config, output_format, merge_global),
        (database, environment, None),
        prepare,
        Submission(reason, idempotency_key, ticket, repo, emergency=True),
        timeout,
        (f"Repair version {version}", yes),
    )

    def render(data: JsonObject, out: Output) -> None:
        out.data(f"Repaired: {action.value} {version}")

    _printed(out, data, render)
