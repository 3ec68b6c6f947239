"""`dbward preflight SQL`: what submitting SQL would meet, without submitting it.

docs/cli.md, docs/preflight.md. Prints the status (requestable, warning, blocked), the
classification, review findings, risk and its factors, the workflow's decision preview
with its approvers, and the EXPLAIN plan a live agent returned. Exit 1 when blocked, so a
script or CI job can stop before submitting; 0 otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from adapters.cli_client.api_client import ApiError
from entrypoints.admin import output
from entrypoints.admin.output import ConfigOption, FormatOption, Output, client_session, display

__all__ = ["preflight", "render_report"]


def render_report(report: Mapping[str, Any], out: Output) -> None:
    """The report for a person: a summary on stdout, the plan last."""
    classification = report.get("classification") or {}
    policy = report.get("policy") or {}
    risk = report.get("risk_assessment") or {}
    out.fields(
        [
            ("status", report.get("status")),
            ("scope", f"{report.get('database')}/{report.get('environment')}"),
            (
                "classification",
                f"{display(classification.get('statement_type'))} "
                f"({display(classification.get('operation'))}, "
                f"{display(classification.get('statement_count'))} statement(s))",
            ),
            ("risk", risk.get("level")),
            ("risk factors", [_factor(f) for f in risk.get("factors") or []]),
            ("workflow", policy.get("workflow_id")),
            ("decision", policy.get("decision_preview")),
            ("approvers", policy.get("approvers")),
        ]
    )
    findings = (report.get("review") or {}).get("findings") or []
    for finding in findings:
        out.data(f"{finding.get('action')}: {finding.get('code')}: {finding.get('message')}")
    for blocker in report.get("blockers") or []:
        out.data(f"blocked: {blocker.get('code')}: {blocker.get('message')}")
    for hint in report.get("fix_hints") or []:
        out.status(f"hint: {hint}")
    explain = report.get("explain") or {}
    detail = explain.get("error") or explain.get("reason")
    out.data(f"explain: {explain.get('status')}" + (f" ({detail})" if detail else ""))
    for entry in explain.get("plans") or []:
        out.data(f"plan of statement {entry.get('statement')}:")
        out.data(json.dumps(entry.get("plan"), indent=2))


def _factor(factor: object) -> str:
    if isinstance(factor, Mapping):
        code, detail = factor.get("code"), factor.get("detail")
        return f"{code} ({detail})" if detail else str(code)
    return str(factor)


def preflight(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="The SQL to check.")],
    database: Annotated[
        str | None, typer.Option("--database", "-d", help="The database (as the server names it).")
    ] = None,
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="The database's environment.")
    ] = "development",
    no_explain: Annotated[
        bool, typer.Option("--no-explain", help="Do not ask an agent for the EXPLAIN plan.")
    ] = False,
    explain_timeout: Annotated[
        int,
        typer.Option(
            "--explain-timeout", min=1, metavar="MS", help="How long to wait for the plan (ms)."
        ),
    ] = 5000,
    config: ConfigOption = None,
    output_format: FormatOption = None,
) -> None:
    """Check SQL before submitting it: classification, review, risk, workflow, plan."""
    if database is None:
        output.usage_error("which database? pass --database NAME", "--database")
    out, client_config = client_session(ctx, config, output_format)
    body: dict[str, Any] = {
        "database": database,
        "environment": environment,
        "sql": sql,
        "include_explain": not no_explain,
        "explain_timeout_ms": explain_timeout,
    }
    try:
        with output.api_client_factory(client_config) as client:
            report = client.preflight(body)
    except ApiError as exc:
        out.fail(exc.code, exc.message, exc.hint)
    if report.get("status") == "blocked":
        if out.human:
            render_report(report, out)
        blockers = report.get("blockers") or []
        message = "; ".join(str(b.get("message")) for b in blockers) or "the SQL is blocked"
        out.fail("blocked", message, data=report)
    if out.human:
        render_report(report, out)
    else:
        out.envelope({"ok": True, "data": report})
    raise typer.Exit(0)
