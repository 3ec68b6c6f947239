"""`dbward user add|list|show|update|suspend|activate|rm|reissue-initial-token`
(docs/server.md §8.4).

`user add` and `user reissue-initial-token` print the user's initial token once, alone on
stdout in human mode, like `token create`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from adapters.cli_client.api_client import ApiClient, ApiError
from entrypoints.admin.output import (
    ConfigOption,
    FormatOption,
    Output,
    display,
    remember_group_options,
    run_client_command,
    unique,
    usage_error,
)

user_app = typer.Typer(
    name="user",
    help="Add, list, show, update, suspend, activate and remove users.",
    no_args_is_help=True,
)

UserId = Annotated[str, typer.Argument(metavar="ID", help="The user's id.")]
RoleOption = Annotated[
    list[str] | None,
    typer.Option("--role", metavar="ROLE", help="A role (repeatable).", show_default=False),
]
GroupOption = Annotated[
    list[str] | None,
    typer.Option("--group", metavar="GROUP", help="A group (repeatable).", show_default=False),
]


@user_app.callback()
def user_options(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """User management (needs user.read / user.write; reissue needs token.reissue)."""
    remember_group_options(ctx, config, output_format)


@user_app.command("add")
def add(
    ctx: typer.Context,
    user_id: UserId,
    role: RoleOption = None,
    group: GroupOption = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Create a user; its initial token is printed once, alone on stdout."""
    roles, groups = unique(role or []), unique(group or [])

    def call(client: ApiClient) -> dict[str, Any]:
        return _with_token(client.create_user(user_id, roles, groups), "POST /api/users")

    def render(created: dict[str, Any], out: Output) -> None:
        out.data(created["token"])
        out.status(f"Created user {created.get('id', user_id)}.")
        _initial_token_details(created, out)

    run_client_command(ctx, config, output_format, call, render)


@user_app.command("list")
def list_users(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """List users."""

    def render(users: list[dict[str, Any]], out: Output) -> None:
        if not users:
            out.status("No users.")
            return
        out.table(
            ["ID", "ROLES", "GROUPS", "STATUS", "CREATED", "LAST SEEN"],
            [
                [
                    display(user.get("id")),
                    display(user.get("roles")),
                    display(user.get("groups")),
                    display(user.get("status") or user.get("lifecycle_state")),
                    display(user.get("created_at")),
                    display(user.get("last_seen_at")),
                ]
                for user in users
            ],
        )

    run_client_command(ctx, config, output_format, lambda client: client.list_users(), render)


@user_app.command("show")
def show(
    ctx: typer.Context,
    user_id: UserId,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Show one user."""
    run_client_command(
        ctx, config, output_format, lambda client: client.get_user(user_id), _render_user
    )


def _render_user(user: dict[str, Any], out: Output) -> None:
    first = ("id", "roles", "groups", "status", "lifecycle_state")
    rows: list[tuple[str, object]] = [(key, user[key]) for key in first if key in user]
    rows += [(key, value) for key, value in user.items() if key not in first]
    out.fields([(key.replace("_", " "), value) for key, value in rows])


@user_app.command("update")
def update(
    ctx: typer.Context,
    user_id: UserId,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            metavar="ROLE",
            help="Replace the roles with these (repeatable).",
            show_default=False,
        ),
    ] = None,
    add_role: Annotated[
        list[str] | None,
        typer.Option("--add-role", metavar="ROLE", help="Add a role (repeatable)."),
    ] = None,
    rm_role: Annotated[
        list[str] | None,
        typer.Option("--rm-role", metavar="ROLE", help="Remove a role (repeatable)."),
    ] = None,
    add_group: Annotated[
        list[str] | None,
        typer.Option("--add-group", metavar="GROUP", help="Add to a group (repeatable)."),
    ] = None,
    rm_group: Annotated[
        list[str] | None,
        typer.Option("--rm-group", metavar="GROUP", help="Remove from a group (repeatable)."),
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Change a user's roles and groups."""
    if not any((role, add_role, rm_role, add_group, rm_group)):
        usage_error(
            "give at least one change",
            "--role",
            "--add-role",
            "--rm-role",
            "--add-group",
            "--rm-group",
        )
    if role and (add_role or rm_role):
        usage_error("replaces the roles; do not combine it with --add-role / --rm-role", "--role")

    def changes(values: list[str] | None) -> list[str] | None:
        return unique(values) if values else None

    def call(client: ApiClient) -> dict[str, Any]:
        return client.update_user(
            user_id,
            roles=changes(role),
            add_roles=changes(add_role),
            rm_roles=changes(rm_role),
            add_groups=changes(add_group),
            rm_groups=changes(rm_group),
        )

    def render(user: dict[str, Any], out: Output) -> None:
        out.status(f"Updated user {user_id}.")
        if user:
            _render_user(user, out)

    run_client_command(ctx, config, output_format, call, render)


def _state_change(
    verb: str, action: Callable[[ApiClient, str], dict[str, Any]]
) -> Callable[..., None]:
    """`user suspend|activate|rm ID`: one POST/DELETE, one status line."""

    def command(
        ctx: typer.Context,
        user_id: UserId,
        config: ConfigOption = None,
        output_format: FormatOption = None,
    ) -> None:
        def render(_result: dict[str, Any], out: Output) -> None:
            out.status(f"{verb} user {user_id}.")

        run_client_command(
            ctx, config, output_format, lambda client: action(client, user_id), render
        )

    return command


user_app.command("suspend", help="Suspend a user: its tokens stop working until activated.")(
    _state_change("Suspended", ApiClient.suspend_user)
)
user_app.command("activate", help="Activate a suspended user.")(
    _state_change("Activated", ApiClient.activate_user)
)
user_app.command("rm", help="Remove a user (soft delete: tokens revoked, memberships dropped).")(
    _state_change("Removed", ApiClient.delete_user)
)


@user_app.command("reissue-initial-token")
def reissue_initial_token(
    ctx: typer.Context,
    user_id: UserId,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Revoke a user's initial token and issue a new one, printed once on stdout."""

    def call(client: ApiClient) -> dict[str, Any]:
        path = f"POST /api/users/{user_id}/reissue-initial-token"
        return _with_token(client.reissue_initial_token(user_id), path)

    def render(issued: dict[str, Any], out: Output) -> None:
        out.data(issued["token"])
        out.status(f"Reissued the initial token of user {user_id}.")
        _initial_token_details(issued, out)

    run_client_command(ctx, config, output_format, call, render)


def _with_token(answer: dict[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(answer.get("token"), str):
        raise ApiError(None, "malformed_response", f"{what}: no token in the answer")
    return answer


def _initial_token_details(answer: dict[str, Any], out: Output) -> None:
    out.fields(
        [
            ("prefix", answer.get("token_prefix") or answer.get("prefix")),
            ("roles", answer.get("roles")),
            ("groups", answer.get("groups")),
        ],
        err=True,
    )
    out.status("The initial token is shown only once: store it now.")
