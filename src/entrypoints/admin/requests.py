"""`dbward whoami`, `dbward execute` and `dbward request …` (docs/cli.md, docs/server.md §1, §2.4).

Unlike `token`/`user`, these commands have outcomes that are neither success nor error, and
scripts must tell them apart by exit code (docs/cli.md):

* 2 `pending_approval`: the request waits for approvers (printed); nothing ran;
* 2 `approved_pending_resume`: approved, but only a resume runs it;
* 124 `timeout`: `--timeout` passed with no result (the request keeps going);
* 130 `interrupted`: Ctrl-C while waiting (the request id is printed; on a terminal the
  command offers to cancel it first);
* 1 for errors, a rejected, cancelled, expired or lost request, or a failed execution.

Waiting re-reads `GET /api/requests/{id}?wait=N`, which answers as soon as the status
changes, so the live status line follows the request (and its `queue_hint`, which says why
a dispatched request is not running yet) without polling in a tight loop. Once the request
is `executed` or `failed`, `…/result/stream` answers at once with the result, including a
result the server only relayed and never stored.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console

from adapters.cli_client.api_client import ApiClient, ApiError
from entrypoints.admin import output
from entrypoints.admin.output import (
    ConfigOption,
    FormatOption,
    Output,
    OutputFormat,
    client_session,
    display,
    remember_group_options,
    usage_error,
)
from entrypoints.admin.result_view import ResultFormat, render_result

EXIT_PENDING = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

#: The longest single `?wait=` the CLI asks for: below the API client's 30 s read timeout.
LONG_POLL_SECS = 20
FINISHED = frozenset({"executed", "failed"})
ENDED = frozenset({"rejected", "cancelled", "expired", "execution_lost"})
#: Statuses a dispatch can fall back to (dispatch timeout); the waiting CLI resumes them.
DISPATCHABLE = frozenset({"auto_approved", "break_glass", "approved"})
QUEUE_HINTS = {
    "no_agents": "no agent serves this database: start one (`dbward agent`)",
    "agents_draining": "the agents serving this database are shutting down",
    "agents_saturated": "every agent serving this database is busy; queued",
}

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


class _Session:
    """One command's output, API client and the request it is about (for Ctrl-C)."""

    def __init__(self, out: Output, client: ApiClient) -> None:
        self.out = out
        self.client = client


@contextlib.contextmanager
def _session(
    ctx: typer.Context,
    config: Path | None,
    output_format: OutputFormat | None,
    allow_insecure: bool = False,
) -> Iterator[_Session]:
    """Resolve the config, open the client; an ApiError inside becomes exit 1 with its code."""
    out, client_config = client_session(ctx, config, output_format, allow_insecure=allow_insecure)
    with output.api_client_factory(client_config) as client:
        try:
            yield _Session(out, client)
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
) -> None:
    """Who the configured token is: subject, roles, groups (GET /api/me)."""
    with _session(ctx, config, output_format, allow_insecure) as session:
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


def execute(
    ctx: typer.Context,
    sql: Annotated[str | None, typer.Argument(help="The SQL to run (or -f FILE).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the SQL from this file.")
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", "-d", help="The database (as the server names it).")
    ] = None,
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="The database's environment.")
    ] = "development",
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (some workflows require it).")
    ] = None,
    operation: Annotated[
        str | None,
        typer.Option("--operation", help="execute_query|execute_dml|execute_ddl (else derived)."),
    ] = None,
    result_format: ResultFormatOption = ResultFormat.TABLE,
    output_file: OutputFileOption = None,
    timeout: TimeoutOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
    output_format: FormatOption = None,
    allow_insecure: AllowInsecureOption = False,
) -> None:
    """Submit SQL; an auto-approved request is waited for and its result printed."""
    if (sql is None) == (file is None):
        usage_error("give the SQL as an argument or with -f FILE, not both", "SQL", "--file")
    if database is None:
        usage_error("which database? pass --database NAME", "--database")
    statement = sql if sql is not None else _read_sql(file)
    with _session(ctx, config, output_format, allow_insecure) as session:
        out = session.out
        _confirm(out, yes, f"Run on {database}/{environment}: {_one_line(statement)}")
        body: dict[str, Any] = {
            "database": database,
            "environment": environment,
            "detail": statement,
        }
        if reason is not None:
            body["reason"] = reason
        if operation is not None:
            body["operation"] = operation
        created = session.client.create_request(body)
        request_id = str(created.get("id"))
        status = str(created.get("status"))
        if status == "pending":
            _stop_pending(out, created)
        if status == "approved":  # an idempotent replay of a request approved since
            out.fail(
                "approved_pending_resume",
                f"request {request_id} is approved but has not run",
                f"run it with `dbward request resume {request_id}`",
                exit_code=EXIT_PENDING,
                data=created,
            )
        if status in ENDED:
            out.fail(status, f"request {request_id} is {status}", data=created)
        _wait_and_print(session, request_id, result_format, output_file, timeout)


def _read_sql(file: Path | None) -> str:
    assert file is not None
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        usage_error(f"cannot read {file}: {exc.strerror or exc}", "--file")


def _one_line(sql: str, limit: int = 80) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _confirm(out: Output, yes: bool, question: str) -> None:
    """Ask on a terminal in human mode; elsewhere only `-y` lets the command go ahead."""
    if yes:
        return
    if out.human and sys.stdin.isatty():
        try:
            if typer.confirm(f"{question}\nContinue?", default=False, err=True):
                return
        except click.Abort:
            pass
        out.fail("aborted", "not confirmed")
    out.fail(
        "confirmation_required",
        "confirmation required and no terminal to ask on",
        "pass -y/--yes",
    )


def _stop_pending(out: Output, request: dict[str, Any]) -> NoReturn:
    request_id = request.get("id")
    approvers = request.get("approvers") or request.get("next_approvers") or []
    out.fail(
        "pending_approval",
        f"request {request_id} requires approval from {display(approvers)}",
        f"once approved, run it with `dbward request resume {request_id}`",
        exit_code=EXIT_PENDING,
        data=request,
    )


# --- waiting for a result ----------------------------------------------------------------------


def _wait_and_print(
    session: _Session,
    request_id: str,
    result_format: ResultFormat,
    output_file: Path | None,
    timeout: float | None,
) -> NoReturn:
    out = session.out
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        request, result = _wait_for_result(session, request_id, deadline)
    except KeyboardInterrupt:
        _interrupted(session, request_id)
    _print_result(out, request, result, result_format, output_file)


def _wait_for_result(
    session: _Session, request_id: str, deadline: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Follow the request to `executed`/`failed` and fetch its result; exits otherwise."""
    out, client = session.out, session.client
    resumed_from: set[str] = set()
    with _live_status(out) as show:
        request = client.get_request(request_id)
        while True:
            status = str(request.get("status"))
            show(_status_text(request_id, status, request.get("queue_hint")))
            if status in FINISHED:
                result = client.request_result_stream(request_id)
                if result is not None:
                    return request, result
            elif status in ENDED:
                out.fail(status, f"request {request_id} is {status}", data=request)
            elif status == "pending":
                _stop_pending(out, request)
            elif status in DISPATCHABLE and status not in resumed_from:
                resumed_from.add(status)
                with contextlib.suppress(ApiError):  # 409: someone else got there first
                    client.resume_request(request_id)
            wait = LONG_POLL_SECS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    out.fail(
                        "timeout",
                        f"no result for request {request_id} in time (still {status})",
                        f"`dbward request result {request_id}` later; the request keeps going",
                        exit_code=EXIT_TIMEOUT,
                        data=request,
                    )
                wait = max(1, min(LONG_POLL_SECS, math.ceil(remaining)))
            request = client.get_request(request_id, wait_secs=wait)


def _status_text(request_id: str, status: str, queue_hint: object) -> str:
    hint = QUEUE_HINTS.get(str(queue_hint)) if queue_hint else None
    return f"Request {request_id}: {status}" + (f" ({hint})" if hint else "")


@contextlib.contextmanager
def _live_status(out: Output) -> Iterator[Callable[[str], None]]:
    """A spinner line on stderr in human mode that each status update rewrites."""
    if not out.human:
        yield lambda _text: None
        return
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        last: list[str] = []

        def print_changes(text: str) -> None:
            if not last or last[-1] != text:
                last.append(text)
                console.print(text)

        yield print_changes
        return
    with console.status("waiting for the request…") as status:
        yield status.update


def _interrupted(session: _Session, request_id: str) -> NoReturn:
    """First Ctrl-C: name the request and, on a terminal, offer to cancel it. Exit 130."""
    out = session.out
    out.warning(
        f"\ninterrupted: request {request_id} keeps going (`dbward request show {request_id}`)"
    )
    if out.human and sys.stdin.isatty():
        try:
            cancel = typer.confirm("Cancel it?", default=False, err=True)
        except (KeyboardInterrupt, click.Abort):
            cancel = False  # a second Ctrl-C: leave at once
        if cancel:
            try:
                session.client.cancel_request(request_id, "cancelled by user (Ctrl-C)")
                out.status(f"Request {request_id} cancelled.")
            except ApiError as exc:
                out.warning(f"could not cancel request {request_id}: {exc.message}")
    out.fail(
        "interrupted",
        f"interrupted while waiting for request {request_id}",
        exit_code=EXIT_INTERRUPTED,
        data={"id": request_id},
    )


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
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this requester.")] = None,
    pending_for_me: Annotated[
        bool, typer.Option("--pending-for-me", help="Only those waiting for my approval.")
    ] = False,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Requests I may see, newest first."""
    filters = {
        key: value
        for key, value in (
            ("limit", None if limit is None else str(limit)),
            ("status", status),
            ("user", user),
            ("pending_for_me", "true" if pending_for_me else None),
        )
        if value is not None
    }
    with _session(ctx, config, output_format) as session:
        requests = session.client.list_requests(filters)

        def render() -> None:
            if not requests:
                session.out.status("No requests.")
                return
            session.out.table(
                ["ID", "STATUS", "DATABASE", "ENV", "OPERATION", "REQUESTER", "CREATED", "NEXT"],
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

        _succeed(session.out, requests, render)


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
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Cancel the request; a running statement is cancelled at the agent's next heartbeat."""
    with _session(ctx, config, output_format) as session:
        answer = session.client.cancel_request(request_id, reason)
        _succeed(session.out, answer, lambda: session.out.data(f"Request {request_id} cancelled."))


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
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Run an approved request (or run one again), wait and print its result."""
    with _session(ctx, config, output_format) as session:
        try:
            answer = session.client.resume_request(request_id, reason)
        except ApiError as exc:
            if exc.status == 409:
                current = session.client.get_request(request_id)
                session.out.fail(
                    exc.code,
                    exc.message,
                    f"the request is {current.get('status')}; "
                    f"see `dbward request show {request_id}`",
                )
            raise
        if answer.get("warning"):
            session.out.warning(f"warning: {answer['warning']}")
        _wait_and_print(session, request_id, result_format, output_file, timeout)


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
