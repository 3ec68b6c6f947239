"""The MCP tools end to end (docs/mcp.md), through the SDK's own client, over both ways in:
`dbward mcp` as a stdio subprocess and `/mcp` on a real `dbward server` process, with a
real agent on PostgreSQL behind it (development auto-approved, production one approval).
"""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import psycopg
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.integration.agent_process import DBWARD, AgentProcess, wait_until
from tests.integration.test_cli_requests import WORKFLOWS, Cli, Stack
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

TOOLS = {
    "dbward_execute_query",
    "dbward_wait_request",
    "dbward_list_pending",
    "dbward_who_can_approve",
    "dbward_explain_policy_failure",
    "dbward_find_similar_requests",
    "dbward_inspect_schema",
    "dbward_migrate_status",
    "dbward_preflight",
}

Connect = Callable[[Stack, str], AbstractAsyncContextManager[Client]]


@asynccontextmanager
async def over_stdio(stack: Stack, token: str) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=str(DBWARD),
        args=["mcp"],
        env={"DBWARD_SERVER_URL": stack.server.url, "DBWARD_TOKEN": token},
        cwd=str(stack.rita.cwd),
    )
    async with Client(params, read_timeout_seconds=120) as client:
        yield client


@asynccontextmanager
async def over_http(stack: Stack, token: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(120)
    )
    async with (
        http,
        Client(
            streamable_http_client(f"{stack.server.url}/mcp", http_client=http),
            read_timeout_seconds=120,
        ) as client,
    ):
        yield client


@pytest.fixture
def stack(tmp_path: Path, pg_database: str) -> Iterator[Stack]:
    """The CLI tests' server and users, with an agent that syncs its schema on startup
    after a `widgets` table was created."""
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE widgets (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO widgets (name) VALUES ('bolt'), ('nut')")
    server = ServerProcess(tmp_path)
    server.config.write_text(
        f'state_dir = "{server.state}"\nlisten = "127.0.0.1:{server.port}"\n' + WORKFLOWS
    )
    server.start()
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    scopes = {"app.development": pg_database, "app.production": pg_database}
    agent = AgentProcess(agent_dir, server.url, scopes, poll_wait_ms=20000)
    syncing = agent.config.read_text().replace("[schema_sync]\nenabled = false", "")
    agent.config.write_text(syncing)
    agent.start_with_token((server.state / "agent-token").read_text().strip())
    try:
        tokens: dict[str, str] = {}
        with server.client() as admin:
            for user, role in (("rita", "requester"), ("alex", "approver")):
                created = admin.post("/api/users", json={"id": user, "roles": [role]})
                assert created.status_code == 201, created.text
                tokens[user] = created.json()["token"]
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        yield Stack(
            server,
            Cli(server.url, tokens["rita"], tmp_path),
            Cli(server.url, tokens["alex"], tmp_path),
        )
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
        assert server.stop() == 0, server.log_path.read_text()


async def _call(client: Client, tool: str, **arguments: Any) -> tuple[bool, str]:
    result = await client.call_tool(tool, arguments)
    text = "".join(getattr(part, "text", "") for part in result.content)
    return bool(result.is_error), text


def _schema_synced(stack: Stack) -> bool:
    with stack.server.client() as admin:
        answer = admin.get("/api/schemas/app", params={"environment": "development"})
    return answer.status_code == 200


@pytest.mark.parametrize("connect", [over_stdio, over_http], ids=["stdio", "http"])
def test_an_assistant_queries_through_the_workflow_and_cannot_break_glass(
    stack: Stack, connect: Connect
) -> None:
    wait_until(lambda: _schema_synced(stack), 60, "the agent's schema sync")

    async def scenario() -> None:
        async with connect(stack, stack.rita.token) as rita:
            listed = {tool.name: tool for tool in (await rita.list_tools()).tools}
            assert set(listed) == TOOLS
            # No way to ask for break-glass: the tool takes no such argument.
            execute_args = listed["dbward_execute_query"].input_schema["properties"]
            assert set(execute_args) == {"sql", "database", "environment", "reason"}

            failed, text = await _call(
                rita,
                "dbward_execute_query",
                sql="SELECT name FROM widgets ORDER BY id",
                database="app",
                environment="development",
            )
            assert not failed, text
            answer = json.loads(text)
            assert answer["status"] == "executed"
            assert answer["result"]["rows"] == [{"name": "bolt"}, {"name": "nut"}]

            failed, text = await _call(
                rita,
                "dbward_execute_query",
                sql="INSERT INTO widgets (name) VALUES ('gear')",
                database="app",
                environment="production",
                reason="restock",
            )
            assert not failed, text
            pending = json.loads(text)
            assert pending["status"] == "pending"
            assert pending["approvers"] == ["role:approver"]
            assert "result" not in pending

            failed, text = await _call(
                rita, "dbward_who_can_approve", request_id=pending["request_id"]
            )
            assert not failed, text
            assert json.loads(text)["approvers"] == ["role:approver"]

            schema = await rita.read_resource("dbward://schemas/app/development")
            tables = json.loads(schema.contents[0].text)["tables"]  # type: ignore[union-attr]
            assert "widgets" in {table["name"] for table in tables}

        async with connect(stack, stack.alex.token) as alex:  # approver: no request.query
            failed, text = await _call(
                alex,
                "dbward_execute_query",
                sql="SELECT 1",
                database="app",
                environment="development",
            )
            assert failed
            assert "forbidden" in text
            assert '"rows"' not in text

    anyio.run(scenario)

    with stack.server.client() as admin:
        events = admin.get("/api/audit/events", params={"limit": "100"}).json()["events"]
    created = [e for e in events if e["event_type"] in ("request.created", "request.auto_approved")]
    assert created
    assert all((e["metadata"] or {}).get("channel") == "mcp" for e in created), created
    # The API refuses break-glass from the MCP channel whoever asks.
    refused = httpx.post(
        f"{stack.server.url}/api/requests",
        headers={"Authorization": f"Bearer {stack.rita.token}", "X-Dbward-Channel": "mcp"},
        json={
            "database": "app",
            "environment": "production",
            "detail": "DELETE FROM widgets",
            "emergency": True,
            "reason": "outage",
        },
        timeout=10,
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "channel.not_offered"


def test_the_http_endpoint_refuses_a_missing_or_unknown_token(stack: Stack) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    for token in (None, "dbw_" + "0" * 32):
        auth = {} if token is None else {"Authorization": f"Bearer {token}"}
        answer = httpx.post(
            f"{stack.server.url}/mcp", json=body, headers={**headers, **auth}, timeout=10
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"]
