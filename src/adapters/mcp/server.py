"""The dbward MCP server: `DbwardTools` under dbward 0.2's tool names (docs/mcp.md).

Both ways of running it build this one server; they differ only in `open_api`, which
gives the API client for the call in hand (its `Context`): `dbward mcp` opens a network
client with the CLI's token, the server's `/mcp` an in-process client with the bearer
token of the HTTP request the call arrived on.

Each call runs in a worker thread of its own capacity limiter: the tools make blocking
API calls, and on the server those calls are served by the same process's thread pool,
which a burst of tool calls must never fill by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations

from adapters.cli_client.api_client import ApiError
from adapters.mcp.tools import (
    AUDIT_LIMIT,
    EXECUTE_WAIT_SECS,
    PENDING_LIMIT,
    DbwardApi,
    DbwardTools,
    Fingerprint,
    ToolFailure,
)

__all__ = ["OpenApi", "build_mcp_server"]

#: `Context -> a context manager yielding the API client for this call`.
OpenApi = Callable[[Context], AbstractContextManager[DbwardApi]]

#: Tool calls in flight at once per server; more wait for a slot.
MAX_CONCURRENT_CALLS = 8

_INSTRUCTIONS = (
    "dbward is a database approval gateway. Queries go through the same workflows, SQL "
    "review and risk scoring as any client: a read may run at once and return rows, a "
    "write usually waits for a human approver. Never try to bypass an approval."
)
_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_SUBMITS = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

_T = TypeVar("_T")


def _api_message(exc: ApiError) -> str:
    text = f"{exc.message} ({exc.code})" if exc.code else exc.message
    return f"{text}; {exc.hint}" if exc.hint else text


def build_mcp_server(
    open_api: OpenApi,
    *,
    version: str,
    fingerprint: Fingerprint,
    default_environment: str | None = None,
) -> MCPServer:
    server: MCPServer = MCPServer("dbward", version=version, instructions=_INSTRUCTIONS)
    limiter = anyio.CapacityLimiter(MAX_CONCURRENT_CALLS)

    async def run(ctx: Context, work: Callable[[DbwardTools], _T]) -> _T:
        def call() -> _T:
            with open_api(ctx) as api:
                tools = DbwardTools(
                    api, fingerprint=fingerprint, default_environment=default_environment
                )
                return work(tools)

        return await anyio.to_thread.run_sync(call, limiter=limiter)

    async def tool(ctx: Context, work: Callable[[DbwardTools], str]) -> str:
        try:
            return await run(ctx, work)
        except ApiError as exc:
            raise ToolError(_api_message(exc)) from None
        except ToolFailure as exc:
            raise ToolError(str(exc)) from None

    async def resource(ctx: Context, work: Callable[[DbwardTools], str]) -> str:
        try:
            return await run(ctx, work)
        except ApiError as exc:
            raise ResourceError(_api_message(exc)) from None
        except ToolFailure as exc:
            raise ResourceError(str(exc)) from None

    async def prompt(ctx: Context, work: Callable[[DbwardTools], str]) -> str:
        try:
            return await run(ctx, work)
        except ApiError as exc:
            raise ValueError(_api_message(exc)) from None

    # --- tools (dbward 0.2's names and arguments) ------------------------------------------

    @server.tool(
        name="dbward_execute_query",
        annotations=_SUBMITS,
        structured_output=False,
        description=(
            "Submit SQL to a database through dbward's approval workflow. A query the "
            f"workflow auto-approves runs and its rows come back (waiting up to "
            f"{EXECUTE_WAIT_SECS:g} s); one that needs approval comes back pending with "
            "who can approve it, and nothing runs."
        ),
    )
    async def dbward_execute_query(
        sql: str, database: str, environment: str, ctx: Context, reason: str | None = None
    ) -> str:
        return await tool(ctx, lambda t: t.execute_query(sql, database, environment, reason))

    @server.tool(
        name="dbward_wait_request",
        annotations=_READ_ONLY,
        structured_output=False,
        description=(
            "Wait (up to `timeout` seconds, at most 300) for a request to finish, end, or "
            "be approved and run; with include_result, the result rows of a finished one."
        ),
    )
    async def dbward_wait_request(
        request_id: str,
        ctx: Context,
        timeout: float = EXECUTE_WAIT_SECS,
        include_result: bool = True,
    ) -> str:
        return await tool(ctx, lambda t: t.wait_request(request_id, timeout, include_result))

    @server.tool(
        name="dbward_list_pending",
        annotations=_READ_ONLY,
        structured_output=False,
        description="Requests waiting for approval that you may see, with who is awaited.",
    )
    async def dbward_list_pending(ctx: Context) -> str:
        return await tool(ctx, lambda t: t.list_pending())

    @server.tool(
        name="dbward_who_can_approve",
        annotations=_READ_ONLY,
        structured_output=False,
        description="Who can approve a pending request, and its approval progress.",
    )
    async def dbward_who_can_approve(request_id: str, ctx: Context) -> str:
        return await tool(ctx, lambda t: t.who_can_approve(request_id))

    @server.tool(
        name="dbward_explain_policy_failure",
        annotations=_READ_ONLY,
        structured_output=False,
        description=(
            "Why a request (request_id) or some SQL (sql, database, environment) is blocked "
            "or needs approval: the decision trace and the preflight judgement."
        ),
    )
    async def dbward_explain_policy_failure(
        ctx: Context,
        request_id: str | None = None,
        sql: str | None = None,
        database: str | None = None,
        environment: str | None = None,
    ) -> str:
        return await tool(
            ctx, lambda t: t.explain_policy_failure(request_id, sql, database, environment)
        )

    @server.tool(
        name="dbward_find_similar_requests",
        annotations=_READ_ONLY,
        structured_output=False,
        description=(
            "Past requests you may see with the same redacted SQL fingerprint, or similar text."
        ),
    )
    async def dbward_find_similar_requests(
        sql: str, ctx: Context, database: str | None = None, limit: int = 10
    ) -> str:
        return await tool(ctx, lambda t: t.find_similar_requests(sql, database, limit))

    @server.tool(
        name="dbward_inspect_schema",
        annotations=_READ_ONLY,
        structured_output=False,
        description=(
            "The schema an agent last reported for a database: every table (name, rows) or "
            "one table's columns, indexes and keys."
        ),
    )
    async def dbward_inspect_schema(
        database: str, ctx: Context, table: str | None = None, environment: str | None = None
    ) -> str:
        return await tool(ctx, lambda t: t.inspect_schema(database, table, environment))

    @server.tool(
        name="dbward_migrate_status",
        annotations=_READ_ONLY,
        structured_output=False,
        description="The migration versions applied to a database (a migrate_status request).",
    )
    async def dbward_migrate_status(database: str, environment: str, ctx: Context) -> str:
        return await tool(ctx, lambda t: t.migrate_status(database, environment))

    @server.tool(
        name="dbward_preflight",
        annotations=_READ_ONLY,
        structured_output=False,
        description=(
            "What would happen if this SQL were submitted: classification, review findings, "
            "risk, the workflow's decision and approvers, and the plan. Creates no request."
        ),
    )
    async def dbward_preflight(sql: str, database: str, environment: str, ctx: Context) -> str:
        return await tool(ctx, lambda t: t.preflight(sql, database, environment))

    # --- resources -------------------------------------------------------------------------

    # Query variables make these templates: only a template's handler gets the Context
    # that carries the caller's token. `dbward://pending` itself matches.
    @server.resource(
        "dbward://pending{?limit}",
        name="pending_requests",
        description="Requests waiting for approval that you may see (newest `limit`, 100).",
        mime_type="application/json",
    )
    async def pending_requests(ctx: Context, limit: int = PENDING_LIMIT) -> str:
        return await resource(ctx, lambda t: t.list_pending(limit))

    @server.resource(
        "dbward://requests/{request_id}",
        name="request",
        description="One request: status, SQL, approvals, decision trace.",
        mime_type="application/json",
    )
    async def request(request_id: str, ctx: Context) -> str:
        return await resource(ctx, lambda t: t.request(request_id))

    @server.resource(
        "dbward://audit/recent{?limit}",
        name="recent_audit_events",
        description="The newest audit events you may see (`limit`, 50).",
        mime_type="application/json",
    )
    async def recent_audit_events(ctx: Context, limit: int = AUDIT_LIMIT) -> str:
        return await resource(ctx, lambda t: t.recent_audit_events(limit))

    @server.resource(
        "dbward://schemas/{database}/{environment}",
        name="schema",
        description="The tables of a database as its agent last reported them.",
        mime_type="application/json",
    )
    async def schema(database: str, environment: str, ctx: Context) -> str:
        return await resource(ctx, lambda t: t.inspect_schema(database, None, environment))

    # --- prompts ---------------------------------------------------------------------------

    @server.prompt(name="explain_request", description="Explain a request to a reviewer.")
    async def explain_request(request_id: str, ctx: Context) -> str:
        return await prompt(ctx, lambda t: t.explain_request_prompt(request_id))

    @server.prompt(
        name="draft_approval_comment",
        description="Draft an approval comment for a request (approving stays with a human).",
    )
    async def draft_approval_comment(request_id: str, ctx: Context) -> str:
        return await prompt(ctx, lambda t: t.approval_comment_prompt(request_id))

    return server
