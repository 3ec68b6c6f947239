"""`dbward init`: write a client config (docs/server.md §8.3, §8.4).

The file is `./dbward.toml`, or `~/.config/dbward/config.toml` with `--global`, holding
`[server] url` and, when one is given, `token`. The token is asked for without echo on a
terminal (an empty answer leaves it out: `DBWARD_TOKEN` can supply it), never printed, and
the file is created with mode 0600. An existing file is replaced only with `-y/--yes`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from adapters.config.client import ENV_TOKEN, GLOBAL_CONFIG_PATH, PROJECT_CONFIG_NAME
from entrypoints.admin.output import FormatOption, Output, OutputFormat, usage_error

FILE_MODE = 0o600
DIR_MODE = 0o700


def config_path(global_: bool, cwd: Path, home: Path | None) -> Path:
    if not global_:
        return cwd / PROJECT_CONFIG_NAME
    if home is None:
        raise typer.BadParameter(
            "no home directory to hold the global config", param_hint="--global"
        )
    return home / GLOBAL_CONFIG_PATH


def render_config(url: str, token: str | None) -> str:
    """The TOML text; JSON string escapes are valid TOML basic strings."""
    lines = [
        "# dbward client config (docs/server.md §8.3). Keep it private: it may hold a token.",
        "[server]",
        f"url = {json.dumps(url)}",
    ]
    if token:
        lines.append(f"token = {json.dumps(token)}")
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Create or replace `path` with mode 0600 (also when it existed with a wider mode)."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        usage_error(f"invalid server URL {url!r}: expected http(s)://host[:port]", "--url")
    return url.strip().rstrip("/")


def _interactive(out: Output) -> bool:
    return out.human and sys.stdin.isatty()


def init(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="The dbward server URL (asked for on a terminal).", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help=f"The API token to store (asked for, hidden, on a terminal; or use ${ENV_TOKEN}).",
            show_default=False,
        ),
    ] = None,
    no_token: Annotated[
        bool, typer.Option("--no-token", help="Do not store a token (nor ask for one).")
    ] = False,
    global_: Annotated[
        bool,
        typer.Option(
            "--global", help="Write ~/.config/dbward/config.toml instead of ./dbward.toml."
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", "--force", help="Replace an existing config file.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Write a client config with the server URL and, optionally, a token (mode 0600)."""
    out = Output(output_format or OutputFormat.HUMAN)
    if token is not None and no_token:
        usage_error("--token and --no-token exclude each other", "--token", "--no-token")
    try:
        home: Path | None = Path.home()
    except RuntimeError:
        home = None
    path = config_path(global_, Path.cwd(), home)
    if path.exists() and not yes:
        out.fail("exists", f"{path} already exists", "pass -y/--yes to replace it")
    if url is None:
        if not _interactive(out):
            usage_error("the server URL is required (no terminal to ask on)", "--url")
        url = typer.prompt("dbward server URL", default="http://127.0.0.1:3000", err=True)
    server_url = _check_url(url)
    if token is None and not no_token and _interactive(out):
        token = typer.prompt(
            "API token (empty: none)", default="", hide_input=True, show_default=False, err=True
        )
    token = (token or "").strip() or None
    write_private(path, render_config(server_url, token))
    data = {"path": str(path), "server_url": server_url, "token_saved": token is not None}
    if not out.human:
        out.envelope({"ok": True, "data": data})
        raise typer.Exit(0)
    out.data(str(path))
    out.status(f"Wrote {path} (mode 0600) for {server_url}.")
    if token is None:
        out.status(f"hint: no token stored; set {ENV_TOKEN} or run `dbward init -y` again")
    out.status("Next: `dbward doctor` checks the config, the server and the token.")
