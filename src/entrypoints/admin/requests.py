"""`dbward whoami`, `dbward execute` and `dbward request …` (docs/cli.md, docs/server.md §1, §2.4).

Unlike `token`/`user`, these commands have outcomes that are neither success nor error, and
scripts must tell them apart by exit code (docs/cli.md):

* 2 `pending_approval`: the request waits for approvers (printed); nothing ran;
* 2 `approved_pending_resume`: approved, but only a resume runs it;
* 124 `timeout`: `--timeout` passed with no result (the request keeps going);
* 130 `interrupted`: Ctrl-C while waiting (the request id is printed; on a terminal the
  command offers to cancel it first);
* 1 for errors, a rejected, cancelled, expired or lost request, or a failed execution.

How a submitted request is followed to its result is `entrypoints.admin.waiting`, shared
with `dbward migrate`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from adapters.cli_client.api_client import ApiClient, ApiError
from adapters.config.client import ClientConfig, ClientConfigError
from entrypoints.admin import output
from entrypoints.admin.output import (
    ConfigOption,
    FormatOption,
    MergeGlobalOption,
    Output,
    OutputFormat,
    client_session,
    confirm,
    display,
    remember_group_options,
    usage_error,
)
from entrypoints.admin.result_view import ResultFormat, render_result
from entrypoints.admin.waiting import follow_created, wait_for_result

# --- options shared by the commands ----------------------------------------------------------

AllowInsecureOption = Annotated[
    bool,
    typer.Option(
        "--allow-insecure", help="Do not warn about a plain-http server URL to a non-local host."
    ),
]
ResultFormatOption = Annotated[
    ResultFormat,
    typer.Option("--result-format", case_sensitive=False, help="How to print the result rows."),
]
OutputFileOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Also write every row to this file (--result-format)."),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", min=0.0, help="Give up waiting after SECS (exit 124)."),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


class _Session:
    """One command's output, API client and resolved client config."""

    def __init__(self, out: Output, client: ApiClient, config: ClientConfig) -> None:
        self.out = out
        self.client = client
        self.config = config

    def target(self, database: str | None, environment: str | None) -> tuple[str, str]:
        """(database, environment) from the flags and the client config's defaults."""
        try:
            return self.config.database(database), self.config.environment(environment)
        except ClientConfigError as exc:
            usage_error(str(exc), "--database")


@contextlib.contextmanager
def _session(
    ctx: typer.Context,
    config: Path | None,
    output_format: OutputFormat | None,
    allow_insecure: bool = False,
    merge_global: bool = False,
) -> Iterator[_Session]:
    """Resolve the config, open the client; an ApiError inside becomes exit 1 with its code."""
    out, client_config = client_session(
        ctx, config, output_format, allow_insecure=allow_insecure, merge_global=merge_global
    )
    with output.api_client_factory(client_config) as client:
        try:
            yield _Session(out, client, client_config)
        except ApiError as exc:
            out.fail(exc.code, exc.message, exc.hint, data=None)


def _succeed(out: Output, data: object, render: Callable[[], None]) -> NoReturn:
    if out.human:
        render()
    else:
        out.envelope({"ok": True, "data": data})
    raise typer.Exit(0)


# --- whoami ----------------------------------------------------------------------------------


def whoami(
    ctx: typer.Context,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    allow_insecure: AllowInsecureOption = False,
    merge_global: MergeGlobalOption = False,
) -> None:
    """Who the configured token is: subject, roles, groups (GET /api/me)."""
    with _session(ctx, config, output_format, allow_insecure, merge_global) as session:
        me = session.client.me()
        roles = me.get("roles") or []
        role_names = [r.get("name") if isinstance(r, dict) else r for r in roles]
        _succeed(
            session.out,
            me,
            lambda: session.out.fields(
                [
                    ("subject", me.get("subject_id")),
                    ("type", me.get("subject_type")),
                    ("roles", role_names),
                    ("groups", me.get("groups")),
                ]
            ),
        )


# --- execute ---------------------------------------------------------------------------------


def request_metadata(ticket: str | None, repo: str | None) -> dict[str, str] | None:
    """`--ticket`/`--repo` as the request's `metadata` (`{"ticket", "repo"}`), if any."""
    metadata = {key: value for key, value in (("ticket", ticket), ("repo", repo)) if value}
    return metadata or None


TicketOption = Annotated[
    str | None, typer.Option("--ticket", help="A ticket id, kept in the request's metadata.")
]
RepoOption = Annotated[
    str | None, typer.Option("--repo", help="A repository URL, kept in the request's metadata.")
]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="Makes a retried submit return the same request."),
]
ShareWithOption = Annotated[
    list[str] | None,
    typer.Option(
        "--share-with", help="Who else may read the result (user:x, role:x, group:x); repeatable."
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database", "-d", help="The database (default: the client config's default_database)."
    ),
]
EnvironmentOption = Annotated[
    str | None,
    typer.Option(
        "--environment",
        "-e",
        help="The environment (default: default_environment, else development).",
        show_default=False,
    ),
]


def execute(
    ctx: typer.Context,
    sql: Annotated[str | None, typer.Argument(help="The SQL to run (or -f FILE).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the SQL from this file.")
    ] = None,
    database: DatabaseOption = None,
    environment: EnvironmentOption = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (some workflows require it).")
    ] = None,
    operation: Annotated[
        str | None,
        typer.Option("--operation", help="execute_query|execute_dml|execute_ddl (else derived)."),
    ] = None,
    emergency: Annotated[
        bool, typer.Option("--emergency", help="Break glass: run without the approvals.")
    ] = False,
    allow_ddl: Annotated[
        bool, typer.Option("--allow-ddl", help="Let an emergency request run DDL.")
    ] = False,
    ticket: TicketOption = None,
    repo: RepoOption = None,
    idempotency_key: IdempotencyKeyOption = None,
    share_with: ShareWithOption = None,
    no_result_store: Annotated[
        bool,
        typer.Option("--no-result-store", help="The server relays the result but keeps none."),
    ] = False,
    result_format: ResultFormatOption = ResultFormat.TABLE,
    output_file: OutputFileOption = None,
    timeout: TimeoutOption = None,
    yes: YesOption = False,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    allow_insecure: AllowInsecureOption = False,
    merge_global: MergeGlobalOption = False,
) -> None:
    """Submit SQL; an auto-approved request is waited for and its result printed."""
    if (sql is None) == (file is None):
        usage_error("give the SQL as an argument or with -f FILE, not both", "SQL", "--file")
    if allow_ddl and not emergency:
        usage_error("--allow-ddl only goes with --emergency", "--allow-ddl")
    statement = sql if sql is not None else _read_sql(file)
    with _session(ctx, config, output_format, allow_insecure, merge_global) as session:
        out = session.out
        db, env = session.target(database, environment)
        confirm(
            out,
            yes,
            f"Run on {db}/{env}{' as an EMERGENCY' if emergency else ''}: {_one_line(statement)}",
        )
        body: dict[str, Any] = {"database": db, "environment": env, "detail": statement}
        optional: dict[str, Any] = {
            "reason": reason,
            "operation": operation,
            "emergency": emergency or None,
            "allow_ddl": allow_ddl or None,
            "metadata": request_metadata(ticket, repo),
            "idempotency_key": idempotency_key,
            "share_with": output.unique(share_with or []) or None,
            "no_store": no_result_store or None,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        created = session.client.create_request(body)
        request, result = follow_created(out, session.client, created, timeout)
        _print_result(out, request, result, result_format, output_file)


def _read_sql(file: Path | None) -> str:
    assert file is not None
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        usage_error(f"cannot read {file}: {exc.strerror or exc}", "--file")


def _one_line(sql: str, limit: int = 80) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _print_result(
    out: Output,
    request: dict[str, Any],
    result: dict[str, Any],
    result_format: ResultFormat,
    output_file: Path | None,
) -> NoReturn:
    request_id = request.get("id")
    if output_file is not None:
        text, _ = render_result(result, result_format, row_limit=None)
        output_file.write_text(text, encoding="utf-8")
        out.status(f"Result written to {output_file}")
    if result.get("success") is False:
        out.fail(
            "execution_failed",
            f"request {request_id} failed: {result.get('error_message') or 'no message'}",
            data={"request": request, "result": result},
        )

    def render() -> None:
        text, notes = render_result(result, result_format)
        sys.stdout.write(text)
        sys.stdout.flush()
        for note in notes:
            out.status(note)

    _succeed(out, {"request": request, "result": result}, render)


# --- dbward request … ------------------------------------------------------------------------

request_app = typer.Typer(name="request", help="List, inspect, approve, resume requests; results.")


@request_app.callback()
def request_group(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """Requests and their results."""
    remember_group_options(ctx, config, output_format)


RequestId = Annotated[str, typer.Argument(metavar="ID", help="The request's id.")]


@request_app.command("list")
def list_requests(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=100, help="At most N (server: 50).")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip the first N.")] = 0,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this requester.")] = None,
    pending_for_me: Annotated[
        bool, typer.Option("--pending-for-me", help="Only those waiting for my approval.")
    ] = False,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Requests I may see, newest first, a page at a time."""
    filters = {
        key: value
        for key, value in (
            ("limit", None if limit is None else str(limit)),
            ("offset", str(offset) if offset else None),
            ("status", status),
            ("user", user),
            ("pending_for_me", "true" if pending_for_me else None),
        )
        if value is not None
    }
    with _session(ctx, config, output_format) as session:
        page = session.client.list_requests(filters)
        requests = page.items

        def render() -> None:
            if not requests:
                session.out.status("No requests.")
            else:
                session.out.table(
                    [
                        "ID",
                        "STATUS",
                        "DATABASE",
                        "ENV",
                        "OPERATION",
                        "REQUESTER",
                        "CREATED",
                        "NEXT",
                    ],
                    [
                        [
                            display(r.get("id")),
                            display(r.get("status")),
                            display(r.get("database")),
                            display(r.get("environment")),
                            display(r.get("operation")),
                            display(r.get("requester")),
                            display(r.get("created_at")),
                            display(r.get("next_approvers")),
                        ]
                        for r in requests
                    ],
                )
            note = page_note(page.offset, len(requests), page.total)
            if note:
                session.out.status(note)

        _succeed(session.out, requests, render)


def page_note(offset: int, shown: int, total: int | None) -> str | None:
    """`showing X-Y of TOTAL; next: --offset N` when more rows follow this page."""
    if total is None or offset + shown >= total or shown == 0:
        return None
    return f"showing {offset + 1}-{offset + shown} of {total}; next: --offset {offset + shown}"


@request_app.command("show")
def show_request(
    ctx: typer.Context,
    request_id: RequestId,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """One request: status, SQL, approvals, what it waits for."""
    with _session(ctx, config, output_format) as session:
        request = session.client.get_request(request_id)
        rows: list[tuple[str, object]] = [
            (key, request.get(key))
            for key in (
                "id",
                "status",
                "database",
                "environment",
                "operation",
                "requester",
                "reason",
                "approvers",
                "queue_hint",
                "created_at",
                "expires_at",
            )
        ]
        rows.extend(_judged_rows(request.get("context")))
        rows.append(("detail", request.get("detail")))
        _succeed(session.out, request, lambda: session.out.fields(rows))


def _judged_rows(context: object) -> list[tuple[str, object]]:
    """The risk and every review finding the request was created with, one line each, so
    an approver reads them before the SQL (docs/sql-safety.md §4)."""
    if not isinstance(context, dict):
        return []
    rows: list[tuple[str, object]] = []
    risk = context.get("risk")
    if isinstance(risk, dict):
        factors = [
            f"{f.get('code')} ({f.get('detail')})" if f.get("detail") else str(f.get("code"))
            for f in risk.get("factors") or []
            if isinstance(f, dict)
        ]
        rows.append(("risk", " ".join([str(risk.get("level")), *(f"- {f}" for f in factors)])))
    review = context.get("sql_review")
    if isinstance(review, dict):
        findings = [f for f in review.get("findings") or [] if isinstance(f, dict)]
        if not findings:
            rows.append(("findings", f"none (policy {review.get('policy_id')})"))
        for finding in findings:
            rows.append(
                (
                    "finding",
                    f"{finding.get('action')} {finding.get('code')}: {finding.get('message')}",
                )
            )
    return rows


@request_app.command("approve")
def approve_request(
    ctx: typer.Context,
    request_id: RequestId,
    comment: Annotated[
        str | None, typer.Option("--comment", help="Kept with the approval.")
    ] = None,
    selector: Annotated[
        str | None,
        typer.Option("--selector", "--as", help="Approve as this selector (role:x, group:x…)."),
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Approve the request's current step."""
    with _session(ctx, config, output_format) as session:
        answer = session.client.approve_request(request_id, comment, selector)

        def render() -> None:
            step = f"step {answer.get('current_step')}/{answer.get('total_steps')}"
            session.out.data(f"Approved as {answer.get('matched_selector')} ({step})")
            if answer.get("status") == "approved":
                session.out.status(
                    f"hint: fully approved; the requester runs it with "
                    f"`dbward request resume {request_id}`"
                )

        _succeed(session.out, answer, render)


@request_app.command("reject")
def reject_request(
    ctx: typer.Context,
    request_id: RequestId,
    reason: Annotated[str | None, typer.Option("--reason", "--comment", help="Why.")] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Reject the request (it will never run)."""
    with _session(ctx, config, output_format) as session:
        answer = session.client.reject_request(request_id, reason)
        _succeed(session.out, answer, lambda: session.out.data(f"Request {request_id} rejected."))


@request_app.command("cancel")
def cancel_request(
    ctx: typer.Context,
    request_id: RequestId,
    reason: Annotated[str | None, typer.Option("--reason", help="Why.")] = None,
    yes: YesOption = False,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Cancel the request; a running statement is cancelled at the agent's next heartbeat.

    Stopping a running request midway asks `Continue? [y/N]` first (`-y` where there is no
    terminal): its transaction rolls back, but DDL that MySQL already committed implicitly
    stays (docs/agent.md §3.2).
    """
    with _session(ctx, config, output_format) as session:
        current = session.client.get_request(request_id)
        if current.get("status") == "running":
            session.out.warning(
                f"warning: request {request_id} is running: its "
                f"{current.get('operation')} is stopped midway and rolled back, except DDL "
                "MySQL already committed"
            )
            confirm(session.out, yes, f"Stop request {request_id}")
        answer = session.client.cancel_request(request_id, reason)
        _succeed(session.out, answer, lambda: session.out.data(f"Request {request_id} cancelled."))


#: What to do about a request that `resume` refused (409), by its current status.
RESUME_REFUSED_HINTS = {
    "pending": "it still waits for approval (`dbward request show {id}` names the approvers)",
    "dispatched": "it is already dispatched; `dbward request result {id}` once it ran",
    "running": "it is running now; `dbward request result {id}` once it finished",
    "rejected": "it was rejected; submit a new request",
    "cancelled": "it was cancelled; submit a new request",
    "expired": "it expired; submit a new request",
}


def resume_refused_hint(request_id: str, status: str) -> str:
    """The hint for a 409 on resume, from the request's current status."""
    template = RESUME_REFUSED_HINTS.get(
        status, "see `dbward request show {id}` for what it waits for"
    )
    return f"the request is {status}: " + template.format(id=request_id)


@request_app.command("resume")
def resume_request(
    ctx: typer.Context,
    request_id: RequestId,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required to resume another's).")
    ] = None,
    result_format: ResultFormatOption = ResultFormat.TABLE,
    output_file: OutputFileOption = None,
    timeout: TimeoutOption = None,
    yes: YesOption = False,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Run an approved request (or run one again), wait and print its result.

    A request whose execution was lost may have run already; resuming it can run it twice,
    so that asks `Continue? [y/N]` first (`-y` where there is no terminal).
    """
    with _session(ctx, config, output_format) as session:
        out, client = session.out, session.client
        current = client.get_request(request_id)
        if current.get("status") == "execution_lost":
            out.warning(
                f"warning: request {request_id}'s execution was lost: its "
                f"{current.get('operation')} may already have run, and resuming runs it again"
            )
            confirm(out, yes, f"Run request {request_id} again")
        try:
            answer = client.resume_request(request_id, reason)
        except ApiError as exc:
            if exc.status == 409:
                now = client.get_request(request_id)
                out.fail(
                    exc.code, exc.message, resume_refused_hint(request_id, str(now.get("status")))
                )
            raise
        if answer.get("warning"):
            out.warning(f"warning: {answer['warning']}")
        request, result = wait_for_result(out, client, request_id, timeout)
        _print_result(out, request, result, result_format, output_file)


@request_app.command("result")
def request_result(
    ctx: typer.Context,
    request_id: RequestId,
    execution: Annotated[
        str | None, typer.Option("--execution", help="This execution (default: the latest).")
    ] = None,
    result_format: ResultFormatOption = ResultFormat.TABLE,
    output_file: OutputFileOption = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Print a request's stored result."""
    with _session(ctx, config, output_format) as session:
        result = session.client.request_result(request_id, execution)
        _print_result(session.out, {"id": request_id}, result, result_format, output_file)


@request_app.command("results")
def list_results(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, max=100, help="At most N.")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Only this database.")] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", "-e", help="Only this environment.")
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Results I may read, newest first."""
    filters = {
        key: value
        for key, value in (
            ("limit", None if limit is None else str(limit)),
            ("database", database),
            ("environment", environment),
        )
        if value is not None
    }
    with _session(ctx, config, output_format) as session:
        results = session.client.list_results(filters)

        def render() -> None:
            if not results:
                session.out.status("No results.")
                return
            session.out.table(
                ["REQUEST", "DATABASE", "ENV", "OPERATION", "SUCCESS", "ROWS", "STORED"],
                [
                    [
                        display(r.get("request_id")),
                        display(r.get("database")),
                        display(r.get("environment")),
                        display(r.get("operation")),
                        display(r.get("success")),
                        display(r.get("rows_affected")),
                        display(r.get("stored_at")),
                    ]
                    for r in results
                ],
            )

        _succeed(session.out, results, render)
