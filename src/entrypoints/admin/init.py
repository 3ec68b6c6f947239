"""`dbward init`: write a client config, or a whole starter setup (docs/cli.md).

Without `--preset` the file is `./dbward.toml`, or `~/.config/dbward/config.toml` with
`--global`, holding `[server] url` and, when one is given, `token`. The token is asked for
without echo on a terminal (an empty answer leaves it out: `DBWARD_TOKEN` can supply it),
never printed, and the file is created with mode 0600. An existing file is replaced only
with `-y/--yes/--force`.

`--preset small-team` writes three files into `--output-dir`: `dbward-server.toml` (database
`app` with `development` approved automatically, `staging` one approval by `role:approver`,
`production` a reason and one approval by `role:dba`), `dbward-agent.toml` (the agent for
those three, its token and database URLs from the environment) and `dbward.toml` (this
client, `default_database = "app"`). None is written when one exists, unless `--force`;
`--dry-run` prints them and writes nothing.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn
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


class Preset(StrEnum):
    SMALL_TEAM = "small-team"


SERVER_FILE = "dbward-server.toml"
AGENT_FILE = "dbward-agent.toml"
ENVIRONMENTS = ("development", "staging", "production")

_SMALL_TEAM_SERVER = """\
# dbward server config written by `dbward init --preset small-team` (docs/server.md §3).
# Run it with `dbward server --config {server_file}`.
state_dir = "./data"
listen = "{listen}"

[[databases]]
name = "app"
environments = ["development", "staging", "production"]

# development: every request runs at once.
[[workflows]]
database = "app"
environment = "development"
auto_approve = {{ mode = "always" }}

# staging: one approval by someone with the role approver.
[[workflows]]
database = "app"
environment = "staging"
[[workflows.steps]]
[[workflows.steps.approvers]]
role = "approver"
min = 1

# production: a reason, and one approval by a dba.
[[workflows]]
database = "app"
environment = "production"
require_reason = true
[[workflows.steps]]
[[workflows.steps.approvers]]
role = "dba"
min = 1

[auth]
[[auth.roles]]
name = "dba"
permissions = ["request.view:any", "result.view:any", "schema.read", "workflow.read",
               "token.create", "token.revoke"]
"""

_SMALL_TEAM_AGENT = """\
# dbward agent config written by `dbward init --preset small-team` (docs/agent.md).
# Run it with `DBWARD_AGENT_TOKEN=… dbward agent --config {agent_file}`; the token is
# the server's `data/agent-token` after its first start.
[server]
url = {url}
agent_token = "${{DBWARD_AGENT_TOKEN}}"
{databases}"""

_SMALL_TEAM_CLIENT = """\
# dbward client config written by `dbward init --preset small-team` (docs/server.md §8.3).
# The token comes from DBWARD_TOKEN (the admin's is the server's data/admin-token).
default_database = "app"
default_environment = "development"

[server]
url = {url}
"""


def preset_files(preset: Preset, server_url: str) -> dict[str, str]:
    """File name → text of a preset's server, agent and client configs."""
    assert preset is Preset.SMALL_TEAM
    parts = urlsplit(server_url)
    listen = f"127.0.0.1:{parts.port or 3000}"
    databases = "".join(
        f'\n[databases.app.{environment}]\nurl = "${{APP_{environment.upper()}_DATABASE_URL}}"\n'
        for environment in ENVIRONMENTS
    )
    quoted = json.dumps(server_url)
    return {
        SERVER_FILE: _SMALL_TEAM_SERVER.format(server_file=SERVER_FILE, listen=listen),
        AGENT_FILE: _SMALL_TEAM_AGENT.format(
            agent_file=AGENT_FILE, url=quoted, databases=databases
        ),
        PROJECT_CONFIG_NAME: _SMALL_TEAM_CLIENT.format(url=quoted),
    }


def _write_preset(
    out: Output,
    preset: Preset,
    output_dir: Path,
    url: str | None,
    *,
    interactive: bool,
    force: bool,
    dry_run: bool,
) -> NoReturn:
    if url is None and interactive:
        url = typer.prompt("dbward server URL", default="http://127.0.0.1:3000", err=True)
    server_url = _check_url(url or "http://127.0.0.1:3000")
    files = {output_dir / name: text for name, text in preset_files(preset, server_url).items()}
    existing = [str(path) for path in files if path.exists()]
    if existing and not force and not dry_run:
        out.fail(
            "exists",
            f"{', '.join(existing)} already exist(s); nothing was written",
            "pass --force to replace them",
        )
    if not dry_run:
        for path, text in files.items():
            write_private(path, text)
    data = {
        "preset": preset.value,
        "dry_run": dry_run,
        "files": [{"path": str(path), "text": text} for path, text in files.items()],
        "replaced": existing if not dry_run else [],
    }
    if not out.human:
        out.envelope({"ok": True, "data": data})
        raise typer.Exit(0)
    for path, text in files.items():
        if dry_run:
            out.data(f"# --- {path}\n{text}")
        else:
            out.data(str(path))
    if dry_run:
        out.status("Dry run: nothing was written.")
        raise typer.Exit(0)
    out.status(f"Wrote the {preset.value} configs (mode 0600) into {output_dir}.")
    out.status(
        f"Next: `dbward server --config {output_dir / SERVER_FILE}`, then "
        f"`dbward agent --config {output_dir / AGENT_FILE}` with "
        "DBWARD_AGENT_TOKEN and the APP_*_DATABASE_URL variables set."
    )
    raise typer.Exit(0)


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
        bool, typer.Option("--yes", "-y", "--force", help="Replace existing config files.")
    ] = False,
    preset: Annotated[
        Preset | None,
        typer.Option(
            "--preset", help="Write a starter server, agent and client config.", show_default=False
        ),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", help="Where --preset writes its files.")
    ] = Path("."),
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="Never ask; take the defaults.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --preset: print the files, write none.")
    ] = False,
    output_format: FormatOption = None,
) -> None:
    """Write a client config (URL, optional token; mode 0600), or with --preset a starter set."""
    out = Output(output_format or OutputFormat.HUMAN)
    interactive = _interactive(out) and not non_interactive
    if preset is not None:
        if token is not None or global_:
            usage_error("--preset writes no token and no global file", "--preset")
        _write_preset(
            out, preset, output_dir, url, interactive=interactive, force=yes, dry_run=dry_run
        )
    if dry_run:
        usage_error("--dry-run goes with --preset", "--dry-run")
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
        if not interactive:
            usage_error("the server URL is required (no terminal to ask on)", "--url")
        url = typer.prompt("dbward server URL", default="http://127.0.0.1:3000", err=True)
    server_url = _check_url(url)
    if token is None and not no_token and interactive:
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
