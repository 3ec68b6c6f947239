"""`dbward token create|list|revoke|inspect` (docs/server.md §4.5, §8.4).

`token create` prints the plaintext token once, alone on stdout in human mode (details go
to stderr), so `TOKEN=$(dbward token create …)` captures exactly the token.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import typer

from adapters.cli_client.api_client import ApiClient, ApiError
from domain.server.api_tokens import SubjectType, TokenStatus
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

token_app = typer.Typer(
    name="token",
    help="Create, list, revoke and inspect API tokens.",
    no_args_is_help=True,
)

_DURATION = re.compile(r"(\d+)([mhd])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
EXPIRES_FORMS = "90d|24h|30m|YYYY-MM-DD|RFC3339"


def parse_expires(value: str, now: datetime) -> str:
    """`--expires` as the RFC 3339 UTC instant the server expects; ValueError if unusable.

    `30m`, `24h`, `90d` count from `now`; `YYYY-MM-DD` is midnight UTC starting that day;
    anything else must be an RFC 3339 time with an offset. The result must be in the future.
    """
    text = value.strip()
    if match := _DURATION.fullmatch(text):
        amount = int(match.group(1))
        if amount == 0:
            raise ValueError(f"{value!r}: a duration must be positive")
        try:
            expires = now + timedelta(seconds=amount * _UNIT_SECONDS[match.group(2)])
        except OverflowError:
            raise ValueError(f"{value!r}: too far in the future") from None
    elif _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r}: not a valid date") from None
        expires = datetime(day.year, day.month, day.day, tzinfo=UTC)
    else:
        try:
            expires = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r}: expected {EXPIRES_FORMS}") from None
        if expires.tzinfo is None:
            raise ValueError(f"{value!r}: an RFC 3339 time needs an offset (Z or +HH:MM)")
    if expires <= now:
        raise ValueError(f"{value!r}: the expiry must be in the future")
    return expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@token_app.callback()
def token_options(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """API tokens: a plaintext token is shown once, when it is created."""
    remember_group_options(ctx, config, output_format)


@token_app.command("create")
def create(
    ctx: typer.Context,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            help="User or agent id the token is for (users: default yourself, via /api/me).",
            show_default=False,
        ),
    ] = None,
    subject_type: Annotated[
        SubjectType, typer.Option("--subject-type", help="user or agent.")
    ] = SubjectType.USER,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            metavar="ROLE",
            help="A role of the scope ceiling (repeatable). Agents: agent-default.",
            show_default=False,
        ),
    ] = None,
    scope_roles: Annotated[
        str | None,
        typer.Option(
            "--scope-roles", help="Scope ceiling as a comma list (same as --role).", metavar="A,B"
        ),
    ] = None,
    no_scope_ceiling: Annotated[
        bool,
        typer.Option("--no-scope-ceiling", help="Agent tokens only: send no scope ceiling."),
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="A label for the token.")] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", help="Expiry: a duration from now or a date/time.", metavar=EXPIRES_FORMS
        ),
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Create a token; the token is printed once, alone on stdout."""
    roles = unique([*(role or []), *(scope_roles or "").split(",")])
    if scope_roles is not None and not scope_roles.strip(","):
        usage_error("needs at least one role", "--scope-roles")
    if no_scope_ceiling and subject_type is not SubjectType.AGENT:
        usage_error("only for agent tokens (--subject-type agent)", "--no-scope-ceiling")
    if no_scope_ceiling and roles:
        usage_error("cannot be combined with --role / --scope-roles", "--no-scope-ceiling")
    if subject_type is SubjectType.AGENT and not subject:
        usage_error("required for agent tokens (the agent's id)", "--subject")
    expires_at = None
    if expires is not None:
        try:
            expires_at = parse_expires(expires, datetime.now(UTC))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--expires'") from None

    def call(client: ApiClient) -> dict[str, Any]:
        subject_id = subject or _own_subject(client)
        created = client.create_token(
            subject_id, subject_type.value, name, roles or None, expires_at
        )
        if not isinstance(created.get("token"), str):
            raise ApiError(None, "malformed_response", "POST /api/tokens: no token in the answer")
        return created

    run_client_command(ctx, config, output_format, call, _render_created)


def _own_subject(client: ApiClient) -> str:
    subject_id = client.me().get("subject_id")
    if not isinstance(subject_id, str) or not subject_id:
        raise ApiError(None, "malformed_response", "GET /api/me: no subject_id in the answer")
    return subject_id


def _render_created(created: dict[str, Any], out: Output) -> None:
    out.data(created["token"])
    out.status(f"Created token {created.get('id', '?')} for {created.get('subject_id', '?')}.")
    out.fields(
        [
            ("prefix", created.get("prefix")),
            ("scope ceiling", created.get("scope_ceiling") or "none"),
            ("effective roles", created.get("effective_roles")),
            ("expires", created.get("expires_at") or "never"),
        ],
        err=True,
    )
    out.status("The token is shown only once: store it now.")


@token_app.command("list")
def list_tokens(
    ctx: typer.Context,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Only tokens of this subject id.")
    ] = None,
    status: Annotated[
        TokenStatus | None, typer.Option("--status", help="active or revoked.")
    ] = None,
    subject_type: Annotated[
        SubjectType | None, typer.Option("--type", help="user or agent.")
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """List tokens (never their plaintext)."""

    def call(client: ApiClient) -> list[dict[str, Any]]:
        return client.list_tokens(
            subject,
            status.value if status else None,
            subject_type.value if subject_type else None,
        )

    run_client_command(ctx, config, output_format, call, _render_token_list)


def _render_token_list(tokens: list[dict[str, Any]], out: Output) -> None:
    if not tokens:
        out.status("No tokens.")
        return
    out.table(
        ["ID", "TYPE", "SUBJECT", "NAME", "PREFIX", "SCOPE CEILING", "STATUS", "EXPIRES"],
        [
            [
                display(token.get("id")),
                display(token.get("subject_type")),
                display(token.get("subject_id")),
                display(token.get("name")),
                display(token.get("token_prefix")),
                display(token.get("scope_ceiling")),
                display(token.get("status")),
                display(token.get("expires_at") or "never"),
            ]
            for token in tokens
        ],
    )


@token_app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Revoke a token; the next request made with it fails."""

    def render(revoked: dict[str, Any], out: Output) -> None:
        at = revoked.get("revoked_at")
        out.status(f"Revoked token {revoked.get('id', token_id)}" + (f" at {at}." if at else "."))

    run_client_command(
        ctx, config, output_format, lambda client: client.revoke_token(token_id), render
    )


@token_app.command("inspect")
def inspect(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id.")],
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Show a token's subject, scope ceiling and effective roles and permissions."""

    def render(info: dict[str, Any], out: Output) -> None:
        out.fields(
            [
                ("id", info.get("id")),
                ("subject", info.get("subject_id")),
                ("subject type", info.get("subject_type")),
                ("status", info.get("status")),
                ("scope ceiling", info.get("scope_ceiling")),
                ("resolved roles", info.get("resolved_roles")),
                ("effective roles", info.get("effective_roles")),
                ("effective permissions", info.get("effective_permissions")),
            ]
        )

    run_client_command(
        ctx, config, output_format, lambda client: client.inspect_token(token_id), render
    )
