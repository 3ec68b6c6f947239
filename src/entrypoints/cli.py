"""The `dbward` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from entrypoints.admin.audit import audit_app
from entrypoints.admin.doctor import doctor
from entrypoints.admin.init import init
from entrypoints.admin.inventory import agents, databases, group_app
from entrypoints.admin.migrate import migrate_app
from entrypoints.admin.output import ConfigOption, MergeGlobalOption, remember_merge_global
from entrypoints.admin.policy import policy_app
from entrypoints.admin.preflight import preflight
from entrypoints.admin.requests import execute, request_app, whoami
from entrypoints.admin.tokens import token_app
from entrypoints.admin.users import user_app
from entrypoints.dev.command import dev
from entrypoints.version import package_version

app = typer.Typer(
    name="dbward",
    help="dbward: approval workflows and an audit trail in front of production databases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dbward {package_version()}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-v", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    merge_global: MergeGlobalOption = False,
) -> None:
    """dbward command line."""
    remember_merge_global(ctx, merge_global)


@app.command()
def agent(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Agent config file (TOML).")
    ] = Path("dbward-agent.toml"),
    check: Annotated[
        bool,
        typer.Option(
            "--check-config",
            help="Validate the config, print the effective settings (secrets redacted), exit.",
        ),
    ] = False,
) -> None:
    """Run the agent: poll the server, execute approved jobs, report results."""
    # Lazy: the other commands never load the agent's container (dependency-injector).
    from entrypoints.agent.command import check_config, run_agent  # noqa: PLC0415

    code = check_config(config) if check else run_agent(config)
    raise typer.Exit(code)


@app.command()
def server(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Server config file (TOML).")
    ] = Path("dbward-server.toml"),
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="host:port to listen on (overrides `listen`)."),
    ] = None,
    force_bootstrap: Annotated[
        bool,
        typer.Option(
            "--force-bootstrap",
            help="Revoke the bootstrap tokens and write new ones to the state dir.",
        ),
    ] = False,
) -> None:
    """Run the dbward server: the API, the agent protocol, the audit log."""
    # Lazy: an agent process never loads FastAPI, SQLAlchemy or sqlglot.
    from entrypoints.server.command import run_server  # noqa: PLC0415

    raise typer.Exit(run_server(config, listen=listen, force_bootstrap=force_bootstrap))


@app.command()
def mcp(config: ConfigOption = None) -> None:
    """Serve dbward's MCP tools on stdin/stdout for an assistant (docs/mcp.md)."""
    # Lazy: only this command loads the MCP SDK.
    from entrypoints.mcp.command import serve_stdio  # noqa: PLC0415

    raise typer.Exit(serve_stdio(config))


app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(migrate_app, name="migrate")
app.command("agents")(agents)
app.command("databases")(databases)
app.add_typer(group_app, name="group")
app.command("init")(init)
app.command("doctor")(doctor)
app.command()(whoami)
app.command()(execute)
app.add_typer(request_app, name="request")
app.command("dev")(dev)
app.command("preflight")(preflight)
app.add_typer(policy_app, name="policy")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
