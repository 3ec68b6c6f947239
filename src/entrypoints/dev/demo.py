"""`dbward dev --demo`: the guided first five minutes, played against the running dev stack.

Each step prints the `dbward` command that does the same thing, then does it through the API
client: a query on `app/development` (auto-approved, answered), a write on `app/production`
that waits, the reviewer's approval, the requester's resume, the result, and the audit chain
verified (docs/workflows.md). Last, it leaves one more write pending, for the reviewer to
approve in the web console (docs/console.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from adapters.cli_client.api_client import ApiClient, JsonObject
from entrypoints.dev.stack import DATABASE, DEVELOPMENT, PRODUCTION, REVIEWER, DevStack

QUERY = "SELECT id, name, email, country FROM customers ORDER BY id"
WRITE = "UPDATE orders SET status = 'refunded' WHERE id = 102"
WRITE_REASON = "refund order 102"
CONSOLE_WRITE = "UPDATE orders SET status = 'refunded' WHERE id = 103"
CONSOLE_WRITE_REASON = "refund order 103"
#: How long a step may wait for the agent to run a request.
EXECUTION_TIMEOUT_SECS = 60.0
DEMO_COMPLETE = "Demo complete."


class DemoError(Exception):
    """A demo step did not end as it should; the message names the step and what came back."""


def play(stack: DevStack, config_hint: Path, console: Console) -> None:
    """Run the guided flow; `config_hint` is how the user reaches the dev dir (for the commands)."""
    client_config = config_hint / "client.toml"
    reviewer_config = config_hint / "reviewer.toml"
    step = _Stepper(console)
    with (
        ApiClient(stack.url, stack.admin_token) as requester,
        ApiClient(stack.url, stack.reviewer_token) as reviewer,
    ):
        step(
            f"A query on {DATABASE}/{DEVELOPMENT}: approved automatically and answered",
            f'dbward execute --config {client_config} -d {DATABASE} -e {DEVELOPMENT} "{QUERY}"',
        )
        query = requester.create_request(_body(DEVELOPMENT, QUERY))
        if query["status"] not in ("auto_approved", "dispatched"):
            raise DemoError(f"the development query is {query['status']}, not auto-approved")
        console.print(f"request {query['id']}: auto-approved, {query['status']}")
        _wait_executed(requester, query["id"], console)
        _print_rows(console, _result(requester, query["id"]))

        step(
            f"A write on {DATABASE}/{PRODUCTION}: it waits for one approval",
            f"dbward execute --config {client_config} -d {DATABASE} -e {PRODUCTION} "
            f'--reason "{WRITE_REASON}" "{WRITE}"',
        )
        write = requester.create_request(_body(PRODUCTION, WRITE, reason=WRITE_REASON))
        request_id = str(write["id"])
        if write["status"] != "pending":
            raise DemoError(f"the production write is {write['status']}, not pending")
        approvers = ", ".join(str(who) for who in write.get("approvers") or [])
        console.print(f"request {request_id}: pending (can approve: {approvers})")

        step(
            f"The {REVIEWER} approves it",
            f"dbward request approve {request_id} --config {reviewer_config}",
        )
        approved = reviewer.approve_request(request_id, comment="looks right")
        console.print(f"request {request_id}: {approved['status']} by {approved['approved_by']}")
        if approved["status"] != "approved":
            raise DemoError(f"the approved write is {approved['status']}, not approved")

        step(
            "The requester resumes it: approved requests run only when resumed",
            f"dbward request resume {request_id} --config {client_config}",
        )
        resumed = requester.resume_request(request_id)
        console.print(f"request {request_id}: {resumed['status']}")
        _wait_executed(requester, request_id, console)

        step("Its result", f"dbward request result {request_id} --config {client_config}")
        result = _result(requester, request_id)
        console.print(f"{result.get('rows_affected')} row(s) affected")

        step("The audit chain", f"dbward audit --verify --config {client_config}")
        verdict = requester.audit_verify()
        if verdict.get("valid") is not True:
            raise DemoError(f"the audit chain does not verify: {verdict}")
        console.print(f"audit chain verified: {verdict.get('total_events')} events, unbroken")

        step(
            f"Your turn, in the browser: approve a write as the {REVIEWER}",
            f"open {stack.url}/ui and sign in with the token in {config_hint / 'reviewer-token'}",
        )
        waiting = requester.create_request(
            _body(PRODUCTION, CONSOLE_WRITE, reason=CONSOLE_WRITE_REASON)
        )
        if waiting["status"] != "pending":
            raise DemoError(f"the console's write is {waiting['status']}, not pending")
        console.print(f"request {waiting['id']}: pending, in the {REVIEWER}'s inbox")
        console.print(f"  {stack.url}/ui/requests/{waiting['id']}", markup=False)
    console.print(f"\n{DEMO_COMPLETE} The stack stays up for your own commands; Ctrl-C stops it.")


class _Stepper:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._number = 0

    def __call__(self, title: str, command: str) -> None:
        self._number += 1
        self._console.print(f"\n[bold]{self._number}. {title}[/bold]")
        self._console.print(f"  $ {command}", style="cyan", markup=False, highlight=False)


def _wait_executed(client: ApiClient, request_id: str, console: Console) -> None:
    """Long-poll the request until it is `executed`, printing each status it passes through."""
    deadline = time.monotonic() + EXECUTION_TIMEOUT_SECS
    seen: list[str] = []
    while time.monotonic() < deadline:
        status = str(client.get_request(request_id, wait_secs=5)["status"])
        if not seen or seen[-1] != status:
            seen.append(status)
            console.print(f"request {request_id}: {status}")
        if status == "executed":
            return
        if status in ("failed", "rejected", "cancelled", "expired", "execution_lost"):
            break
    raise DemoError(f"request {request_id} went {' → '.join(seen)}, not executed")


def _result(client: ApiClient, request_id: str) -> JsonObject:
    result = client.request_result_stream(request_id)
    if result is None or result.get("success") is not True:
        raise DemoError(f"request {request_id} has no successful result: {result}")
    return result


def _body(environment: str, detail: str, reason: str | None = None) -> JsonObject:
    body: JsonObject = {"database": DATABASE, "environment": environment, "detail": detail}
    if reason is not None:
        body["reason"] = reason
    return body


def _print_rows(console: Console, result: JsonObject) -> None:
    data: Any = result.get("result_data")
    if isinstance(data, str):
        data = orjson.loads(data)
    rows: list[dict[str, Any]] = data.get("rows", []) if isinstance(data, dict) else []
    columns = [str(column["name"]) for column in data.get("columns") or []] if rows else []
    columns = columns or (list(rows[0]) if rows else [])
    table = Table(box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)
    console.print(f"{len(rows)} row(s)")


def _cell(value: object) -> str:
    return "NULL" if value is None else str(value)
