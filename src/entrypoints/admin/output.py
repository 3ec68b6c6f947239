"""What the client commands (`dbward token …`, `dbward user …`) share: the client
configuration they resolve (`adapters.config.client`) and how results and errors are
printed (docs/server.md §8.3).

Output contract: `--format human` prints data to stdout and status, hints and warnings to
stderr; `json` and `quiet` print exactly one line to stdout, `{"ok":true,"data":…}` or
`{"ok":false,"data":null,"error":{"code","message"}}`, and quiet prints nothing on stderr.
Exit codes: 0 ok, 1 error (auth, network, validation, forbidden…), 2 usage (click's own).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from adapters.cli_client.api_client import ApiClient, ApiError
from adapters.config.client import (
    ENV_CONFIG,
    ClientConfig,
    ClientConfigError,
    resolve_client_config,
)
from entrypoints.version import package_version

# --- the output contract ----------------------------------------------------------------


class OutputFormat(StrEnum):
    HUMAN = "human"
    JSON = "json"
    QUIET = "quiet"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help=f"Client config file (TOML with the server url and token); also ${ENV_CONFIG}.",
        show_default=False,
    ),
]
FormatOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        help="human (default): data on stdout, status on stderr; json/quiet: one JSON line.",
        case_sensitive=False,
        show_default=False,
    ),
]

_META_KEY = "dbward.client_options"


MergeGlobalOption = Annotated[
    bool,
    typer.Option(
        "--merge-global",
        help="With --config/$DBWARD_CONFIG: merge that file over ~/.config/dbward/config.toml.",
    ),
]
_MERGE_GLOBAL_KEY = "dbward.merge_global"


@dataclass(frozen=True)
class ClientOptions:
    config: Path | None = None
    output_format: OutputFormat | None = None


def remember_group_options(
    ctx: typer.Context, config: Path | None, output_format: OutputFormat | None
) -> None:
    """Called by a sub-app callback: `dbward token --format json list` sets them for all."""
    ctx.meta[_META_KEY] = ClientOptions(config, output_format)


def remember_merge_global(ctx: typer.Context, merge_global: bool) -> None:
    """Called by the root callback: `dbward --merge-global …` holds for every command."""
    if merge_global:
        ctx.meta[_MERGE_GLOBAL_KEY] = True


def _effective_options(
    ctx: typer.Context, config: Path | None, output_format: OutputFormat | None
) -> tuple[Path | None, OutputFormat]:
    group = ctx.meta.get(_META_KEY, ClientOptions())
    return (
        config or group.config,
        output_format or group.output_format or OutputFormat.HUMAN,
    )


class Output:
    """Prints per the output contract; human renderers get stdout and stderr helpers."""

    def __init__(self, output_format: OutputFormat) -> None:
        self.format = output_format

    @property
    def human(self) -> bool:
        return self.format is OutputFormat.HUMAN

    def data(self, text: str) -> None:
        """One line of data on stdout (human mode)."""
        typer.echo(text)

    def status(self, text: str) -> None:
        """A status line on stderr; human mode only."""
        if self.human:
            typer.echo(text, err=True)

    def warning(self, text: str) -> None:
        """Warnings reach stderr in human and json mode, never in quiet mode."""
        if self.format is not OutputFormat.QUIET:
            typer.echo(text, err=True)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        _console(sys.stdout).print(table)

    def fields(self, rows: Iterable[tuple[str, object]], *, err: bool = False) -> None:
        """Aligned `name  value` lines, on stdout (data) or stderr (details of an action)."""
        if err and not self.human:
            return
        pairs = [(name, display(value)) for name, value in rows]
        width = max((len(name) for name, _ in pairs), default=0)
        for name, value in pairs:
            typer.echo(f"{name:<{width}}  {value}", err=err)

    def envelope(self, payload: Mapping[str, object]) -> None:
        typer.echo(json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str))

    def fail(
        self,
        code: str,
        message: str,
        hint: str | None = None,
        *,
        exit_code: int = 1,
        data: object = None,
    ) -> NoReturn:
        """Print the error (human: stderr; json/quiet: the envelope, with `data` if any)."""
        if self.human:
            typer.echo(f"error: {message}", err=True)
            if hint:
                typer.echo(f"hint: {hint}", err=True)
        else:
            error: dict[str, str] = {"code": code, "message": message}
            if hint:
                error["hint"] = hint
            self.envelope({"ok": False, "data": data, "error": error})
        raise typer.Exit(exit_code)


def _console(stream: Any) -> Console:
    """Tables fit the terminal (or `$COLUMNS`), folding long cells; piped with no `$COLUMNS`
    they are wide enough not to fold at 80 columns."""
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    width = None if is_tty or os.environ.get("COLUMNS", "").isdigit() else 240
    return Console(file=stream, highlight=False, width=width, soft_wrap=False)


def display(value: object) -> str:
    """One cell's text: lists joined, a scope ceiling as its roles, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict) and set(value) == {"roles"}:
        return display(value["roles"])
    if isinstance(value, list | tuple):
        if not value:
            return "—"
        if all(isinstance(item, str) for item in value):
            return ", ".join(value)
        return ", ".join(
            item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
            for item in value
        )
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


# --- running a command ------------------------------------------------------------------


def _default_api_client(config: ClientConfig) -> ApiClient:
    return ApiClient(config.server_url, config.token, user_agent=f"dbward-cli/{package_version()}")


#: The seam tests replace to run the commands against an `httpx.MockTransport`.
api_client_factory: Callable[[ClientConfig], ApiClient] = _default_api_client


def run_client_command(
    ctx: typer.Context,
    config: Path | None,
    output_format: OutputFormat | None,
    call: Callable[[ApiClient], Any],
    render: Callable[[Any, Output], None],
) -> NoReturn:
    """Resolve the config, make the API call, print per the output contract, exit 0 or 1.

    `call` returns the JSON-able data; `render` prints it in human mode (json and quiet
    print the envelope instead).
    """
    out, client_config = client_session(ctx, config, output_format)
    try:
        with api_client_factory(client_config) as client:
            data = call(client)
    except ApiError as exc:
        out.fail(exc.code, exc.message, exc.hint)
    if out.human:
        render(data, out)
    else:
        out.envelope({"ok": True, "data": data})
    raise typer.Exit(0)


def client_session(
    ctx: typer.Context,
    config: Path | None,
    output_format: OutputFormat | None,
    *,
    allow_insecure: bool = False,
    merge_global: bool = False,
) -> tuple[Output, ClientConfig]:
    """The output and the resolved client config; a config problem fails (exit 1) here.

    For commands whose exit codes go beyond 0 and 1 (`execute`, `request …`), which open
    the API client themselves. `allow_insecure` (or the file's `allow_insecure = true`)
    silences the plain-http warning.
    """
    config_path, fmt = _effective_options(ctx, config, output_format)
    out = Output(fmt)
    merge = merge_global or bool(ctx.meta.get(_MERGE_GLOBAL_KEY))
    try:
        client_config = load_client_config(config_path, merge_global=merge)
    except ClientConfigError as exc:
        out.fail("config", str(exc))
    if not (allow_insecure or client_config.allow_insecure):
        for warning in client_config.warnings:
            out.warning(warning)
    return out, client_config


def load_client_config(config_path: Path | None, *, merge_global: bool = False) -> ClientConfig:
    """The client config as this process sees it: its environment, directory and home."""
    return resolve_client_config(
        config_path, os.environ, cwd=Path.cwd(), home=_home(), merge_global=merge_global
    )


def _home() -> Path | None:
    try:
        return Path.home()
    except RuntimeError:  # no HOME and no passwd entry: there is no global config then
        return None


def confirm(out: Output, yes: bool, question: str) -> None:
    """Ask `Continue? [y/N]` on a terminal in human mode; elsewhere only `-y` goes ahead.

    Refused or unanswerable, the command exits 1: `aborted` when the person said no,
    `confirmation_required` when there was no terminal to ask on.
    """
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


def usage_error(message: str, *options: str) -> NoReturn:
    """A bad combination of arguments: typer prints it as a usage error and exits 2."""
    raise typer.BadParameter(message, param_hint=" / ".join(f"'{o}'" for o in options) or None)


def unique(values: Iterable[str]) -> list[str]:
    """Values in first-seen order without repeats or blanks (repeatable and comma options)."""
    seen: dict[str, None] = {}
    for value in values:
        if value.strip():
            seen.setdefault(value.strip(), None)
    return list(seen)
