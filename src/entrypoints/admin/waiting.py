"""Following a submitted request to its result: what `execute`, `request resume` and
`migrate up|down|status|repair` share (docs/cli.md).

After a submit the status the server answered decides (`follow_created`): `pending` exits 2
naming the approvers, `approved` (an idempotent replay) exits 2 with the resume hint, a
rejected, cancelled, expired or lost request exits 1; anything else is waited for
(`wait_for_result`):

* the request is re-read with `GET /api/requests/{id}?wait=N`, which answers as soon as the
  status changes, so the live status line follows it (and its `queue_hint`, which says why
  a dispatched request is not running yet) without polling in a tight loop;
* a request in `auto_approved`/`break_glass`/`approved` (never dispatched, or back there
  after a dispatch timeout) is resumed, once per status;
* once it is `executed` or `failed`, `…/result/stream` answers at once with the result,
  including a result the server only relayed and never stored; when that wait runs out
  the loop goes on reading the status.

`--timeout` ends the wait with exit 124 (the request keeps going). The first Ctrl-C names
the request and, on a terminal, offers to cancel it; a second one, or any answer, exits 130.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
import typer
from rich.console import Console

from adapters.cli_client.api_client import ApiClient, ApiError
from adapters.cli_client.request_states import DISPATCHABLE, ENDED, FINISHED
from entrypoints.admin.output import Output, display

EXIT_PENDING = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

#: The longest single `?wait=` the CLI asks for: below the API client's 30 s read timeout.
LONG_POLL_SECS = 20
#: The least time between two status reads when the server answers at once without news.
MIN_PAUSE_SECS = 0.5
QUEUE_HINTS = {
    "no_agents": "no agent serves this database: start one (`dbward agent`)",
    "agents_draining": "the agents serving this database are shutting down",
    "agents_saturated": "every agent serving this database is busy; queued",
}

Result = tuple[dict[str, Any], dict[str, Any]]


def follow_created(
    out: Output, client: ApiClient, created: dict[str, Any], timeout: float | None
) -> Result:
    """Act on the status a submit answered; wait for the result when it may run now."""
    request_id = str(created.get("id"))
    status = str(created.get("status"))
    if status == "pending":
        stop_pending(out, created)
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
    return wait_for_result(out, client, request_id, timeout)


def stop_pending(out: Output, request: dict[str, Any]) -> NoReturn:
    """Exit 2: the request waits for approvers, named; nothing ran."""
    request_id = request.get("id")
    approvers = request.get("approvers") or request.get("next_approvers") or []
    out.fail(
        "pending_approval",
        f"request {request_id} requires approval from {display(approvers)}",
        f"once approved, run it with `dbward request resume {request_id}`",
        exit_code=EXIT_PENDING,
        data=request,
    )


def wait_for_result(
    out: Output, client: ApiClient, request_id: str, timeout: float | None
) -> Result:
    """The request and its result once it is `executed`/`failed`; exits otherwise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        return _follow(out, client, request_id, deadline)
    except KeyboardInterrupt:
        _interrupted(out, client, request_id)


def _follow(out: Output, client: ApiClient, request_id: str, deadline: float | None) -> Result:
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
                stop_pending(out, request)
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
            asked = time.monotonic()
            request = client.get_request(request_id, wait_secs=wait)
            if request.get("status") == status and time.monotonic() - asked < MIN_PAUSE_SECS:
                # The server answered at once without news (draining, no long-poll): pace.
                time.sleep(MIN_PAUSE_SECS)


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


def _interrupted(out: Output, client: ApiClient, request_id: str) -> NoReturn:
    """First Ctrl-C: name the request and, on a terminal, offer to cancel it. Exit 130."""
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
                client.cancel_request(request_id, "cancelled by user (Ctrl-C)")
                out.status(f"Request {request_id} cancelled.")
            except ApiError as exc:
                out.warning(f"could not cancel request {request_id}: {exc.message}")
    out.fail(
        "interrupted",
        f"interrupted while waiting for request {request_id}",
        exit_code=EXIT_INTERRUPTED,
        data={"id": request_id},
    )
