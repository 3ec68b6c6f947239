"""`dbward audit [filters] | audit --verify [--anchor A] | audit head` (docs/server.md §6, §8.4).

`audit head` prints the signed anchor alone on stdout in human mode, so
`ANCHOR=$(dbward audit head)` keeps exactly what `audit --verify --anchor "$ANCHOR"` later
needs. A verification that finds the chain broken exits 1, naming the event and why.
"""

from __future__ import annotations

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
    usage_error,
)

audit_app = typer.Typer(
    name="audit",
    help="List audit events, verify the audit chain, or print its signed head.",
    invoke_without_command=True,
)

AUDIT_BROKEN = "audit_chain_broken"


@audit_app.callback()
def audit(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N events.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this actor's events.")] = None,
    event_type: Annotated[
        str | None, typer.Option("--event-type", help="Only this event type.")
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="Only this event category.")
    ] = None,
    outcome: Annotated[str | None, typer.Option("--outcome", help="Only this outcome.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="RFC 3339, inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="RFC 3339, inclusive.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Verify the hash chain instead of listing.")
    ] = False,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            metavar="ANCHOR",
            help="With --verify: an anchor from `dbward audit head` the chain must still hold.",
        ),
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """The audit log (needs audit.read)."""
    remember_group_options(ctx, config, output_format)
    if ctx.invoked_subcommand is not None:
        return
    if anchor is not None and not verify:
        usage_error("--anchor is only used with --verify", "--anchor")
    if verify:
        run_client_command(
            ctx, config, output_format, lambda client: _verified(client, anchor), _render_verdict
        )
    filters = {
        key: value
        for key, value in (
            ("limit", None if limit is None else str(limit)),
            ("actor_id", user),
            ("event_type", event_type),
            ("event_category", category),
            ("outcome", outcome),
            ("since", since),
            ("until", until),
        )
        if value is not None
    }
    run_client_command(
        ctx, config, output_format, lambda client: client.audit_events(filters), _render_events
    )


def _verified(client: ApiClient, anchor: str | None) -> dict[str, Any]:
    verdict = client.audit_verify(anchor)
    if verdict.get("valid") is not True:
        where = verdict.get("first_broken_id")
        reason = verdict.get("reason") or "unknown reason"
        raise ApiError(
            None,
            AUDIT_BROKEN,
            f"the audit chain is broken at event {where} ({reason})",
            "the store was changed outside dbward; compare with your backups and kept anchors",
        )
    return verdict


def _render_verdict(verdict: dict[str, Any], out: Output) -> None:
    rows: list[tuple[str, object]] = [
        ("valid", verdict.get("valid")),
        ("total events", verdict.get("total_events")),
    ]
    if "anchor_verified" in verdict:
        rows.append(("anchor verified", verdict.get("anchor_verified")))
    out.fields(rows)


def _render_events(events: list[dict[str, Any]], out: Output) -> None:
    if not events:
        out.status("No audit events.")
        return
    out.table(
        ["CREATED", "TYPE", "OUTCOME", "ACTOR", "RESOURCE", "REASON"],
        [
            [
                display(event.get("created_at")),
                display(event.get("event_type")),
                display(event.get("outcome")),
                display(event.get("actor_id")),
                display(event.get("request_id") or event.get("resource_id")),
                display(event.get("reason")),
            ]
            for event in events
        ],
    )


@audit_app.command("head")
def head(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """Print the chain's newest event signed by the server: an anchor to keep elsewhere."""

    def render(signed: dict[str, Any], out: Output) -> None:
        out.data(str(signed.get("anchor")))
        out.fields(
            [
                ("event", signed.get("event_id")),
                ("position", signed.get("position")),
                ("hash", signed.get("event_hash")),
                ("created", signed.get("created_at")),
                ("key id", signed.get("key_id")),
            ],
            err=True,
        )

    run_client_command(ctx, config, output_format, lambda client: client.audit_head(), render)
