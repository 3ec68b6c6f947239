"""`dbward agents`, `dbward databases` and `dbward group list|show` (docs/server.md §8.4).

What the server knows about who serves what: the agents that poll it, the configured
database/environment pairs with the agents serving each, and the groups of its config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from adapters.cli_client.api_client import ApiClient
from entrypoints.admin.output import (
    ConfigOption,
    FormatOption,
    Output,
    display,
    remember_group_options,
    run_client_command,
)


def scope_names(scopes: object) -> list[str]:
    """`[{database, environment}, …]` as `database/environment` names (as the agent logs them)."""
    if not isinstance(scopes, list):
        return []
    return [
        f"{scope.get('database')}/{scope.get('environment')}"
        for scope in scopes
        if isinstance(scope, Mapping)
    ]


def seen_ago(seconds: object) -> str:
    """`last_poll_ago_secs` as `12s ago`, `3m ago`, `2h ago`, `4d ago`; never polled → dash."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "—"
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit} ago"
    return f"{whole}s ago"


def _agent_name(agent: Mapping[str, Any]) -> str:
    """The token's subject; the agent's own `agent_id` in brackets when it sent one that
    differs (agents sharing a token are told apart by it)."""
    name = str(agent.get("id", "?"))
    agent_id = agent.get("agent_id")
    return (
        f"{name} ({agent_id})" if isinstance(agent_id, str) and agent_id not in ("", name) else name
    )


def _agent_version(agent: Mapping[str, Any]) -> str:
    version, build = agent.get("agent_version"), agent.get("agent_build")
    if version and build and build != version:
        return f"{version} / {build}"
    return display(version or build)


def render_agents(agents: Sequence[Mapping[str, Any]], out: Output) -> None:
    if not agents:
        out.status("No agents have polled this server yet.")
        return
    out.table(
        ["AGENT", "VERSION/BUILD", "SCOPES", "DEGRADED", "STATUS", "LAST SEEN", "JOBS"],
        (
            [
                _agent_name(agent),
                _agent_version(agent),
                display(scope_names((agent.get("capabilities") or {}).get("scopes"))),
                display(scope_names(agent.get("degraded_scopes"))),
                display(agent.get("status")),
                seen_ago(agent.get("last_poll_ago_secs")),
                f"{display(agent.get('in_flight'))}/{display(agent.get('max_concurrent'))}",
            ]
            for agent in agents
        ),
    )


def agents(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """List the agents: version, scopes (and degraded ones), status, last seen."""
    run_client_command(ctx, config, output_format, ApiClient.list_agents, render_agents)


def _serving(agent: Mapping[str, Any]) -> str:
    notes = [display(agent.get("status"))]
    if agent.get("degraded"):
        notes.append("degraded")
    notes.append(seen_ago(agent.get("last_poll_ago_secs")))
    return f"{_agent_name(agent)} ({', '.join(notes)})"


def render_databases(databases: Sequence[Mapping[str, Any]], out: Output) -> None:
    if not databases:
        out.status("No databases are configured on this server.")
        return
    out.table(
        ["DATABASE", "ENVIRONMENT", "AGENTS"],
        (
            [
                display(entry.get("database")),
                display(entry.get("environment")),
                display([_serving(agent) for agent in entry.get("agents") or []]),
            ]
            for entry in databases
        ),
    )
    unserved = sum(1 for entry in databases if not entry.get("agents"))
    if unserved:
        out.status(f"{unserved} database/environment pair(s) have no agent serving them.")


def databases(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """List the configured database/environment pairs and the agents serving them."""
    run_client_command(ctx, config, output_format, ApiClient.list_databases, render_databases)


# --- groups ----------------------------------------------------------------------------------

group_app = typer.Typer(
    name="group", help="List and show the groups of the server's config.", no_args_is_help=True
)


@group_app.callback()
def group_options(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """Groups (read-only: they live in the server's config file)."""
    remember_group_options(ctx, config, output_format)


def render_groups(groups: Sequence[Mapping[str, Any]], out: Output) -> None:
    if not groups:
        out.status("No groups are configured.")
        return
    out.table(
        ["GROUP", "ROLES", "MEMBERS"],
        (
            [display(g.get("name")), display(g.get("roles")), display(g.get("members"))]
            for g in groups
        ),
    )


@group_app.command("list")
def list_groups(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """List groups with their roles and members."""
    run_client_command(ctx, config, output_format, ApiClient.list_groups, render_groups)


@group_app.command("show")
def show_group(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The group's name.")],
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Show one group: its roles and members."""

    def call(client: ApiClient) -> dict[str, Any]:
        return client.get_group(name)

    def render(group: Mapping[str, Any], out: Output) -> None:
        out.fields(
            [
                ("name", group.get("name", name)),
                ("roles", group.get("roles")),
                ("members", group.get("members")),
            ]
        )

    run_client_command(ctx, config, output_format, call, render)
