"""`dbward policy resolve DB ENV [--operation OP]`: the policies and decisions of a scope.

docs/cli.md. A table of every operation with its workflow and the decision a request
would get (deny, auto_approved, may_auto_approve, needs_approval), after the execution
and SQL review policies that apply; with `--operation`, that operation's approval steps.
"""

from __future__ import annotations

from collections.abc import Mapping
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

__all__ = ["policy_app", "render_resolution"]

policy_app = typer.Typer(
    name="policy", help="How the server's policies apply to a scope.", no_args_is_help=True
)


@policy_app.callback()
def policy_options(
    ctx: typer.Context, config: ConfigOption = None, output_format: FormatOption = None
) -> None:
    """Policies (read-only: they live in the server's config file)."""
    remember_group_options(ctx, config, output_format)


def render_resolution(resolution: Mapping[str, Any], out: Output) -> None:
    if not resolution.get("registered"):
        out.status(
            f"{resolution.get('database')}/{resolution.get('environment')} is not registered: "
            "every request there is refused."
        )
    execution = resolution.get("execution_policy") or {}
    review = resolution.get("sql_review_policy") or {}
    out.fields(
        [
            (
                "execution policy",
                f"{display(execution.get('matched_by'))}: statement timeout "
                f"{display(execution.get('statement_timeout_secs'))}s, max rows "
                f"{display(execution.get('max_rows'))}",
            ),
            ("sql review policy", f"{display(review.get('id'))} ({display(review.get('source'))})"),
        ]
    )
    out.table(
        ["OPERATION", "WORKFLOW", "MATCHED BY", "DECISION", "REASON"],
        (
            [
                display(entry.get("operation")),
                display(entry.get("workflow_id")),
                display(entry.get("matched_by")),
                display(entry.get("decision_preview")),
                display(entry.get("reason_code")),
            ]
            for entry in resolution.get("resolutions") or []
        ),
    )
    workflow = resolution.get("workflow")
    if isinstance(workflow, Mapping):
        for number, step in enumerate(workflow.get("steps") or [], 1):
            out.data(
                f"step {number} ({display(step.get('mode'))}): {display(step.get('approvers'))}"
            )
        out.data(f"reason required: {display(workflow.get('require_reason'))}")


@policy_app.command("resolve")
def resolve(
    ctx: typer.Context,
    database: Annotated[str, typer.Argument(metavar="DB", help="The database.")],
    environment: Annotated[str, typer.Argument(metavar="ENV", help="The environment.")],
    operation: Annotated[
        str | None, typer.Option("--operation", help="Only this operation, with its steps.")
    ] = None,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Show which workflow and policies a database/environment gets, per operation."""

    def call(client: ApiClient) -> dict[str, Any]:
        return client.policy_resolution(database, environment, operation)

    run_client_command(ctx, config, output_format, call, render_resolution)
