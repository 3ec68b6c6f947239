"""Real `dbward server` and `dbward agent` processes: replicas sharing one agent token, and
a killed agent whose PostgreSQL statement must not outlive it (docs/server.md §7.3,
docs/agent.md §4).
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.agent_process import (
    DBWARD,
    AgentProcess,
    wait_for_status,
    wait_until,
)
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

#: Requests of the drill, spread over both environments.
REQUESTS = 40


@pytest.fixture
def server(tmp_path: Path) -> Any:
    process = ServerProcess(tmp_path).start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def _agent_token(server: ServerProcess, subject: str) -> str:
    env = {**os.environ, "DBWARD_SERVER_URL": server.url, "DBWARD_TOKEN": server.admin_token}
    created = subprocess.run(
        [DBWARD, "token", "create", "--subject", subject, "--subject-type", "agent",
         "--role", "agent-default"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def _agent(
    tmp_path: Path, name: str, server: ServerProcess, databases: dict[str, str], **keys: object
) -> AgentProcess:
    directory = tmp_path / name
    directory.mkdir()
    keys = {"poll_wait_ms": 20000, "max_concurrent_tasks": 4, **keys}
    return AgentProcess(directory, server.url, databases, agent_id=name, **keys)


def _create(client: httpx.Client, environment: str, sql: str) -> str:
    created = client.post(
        "/api/requests",
        json={"database": "app", "environment": environment, "operation": "execute_query",
              "detail": sql},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    request_id: str = created.json()["id"]
    return request_id


def test_two_agents_sharing_one_token_each_claim_their_own_environment(
    tmp_path: Path, server: ServerProcess, pg_database: str, mysql_database: str
) -> None:
    token = _agent_token(server, "shared-agent")
    on_pg = _agent(tmp_path, "replica-pg", server, {"app.pg": pg_database})
    on_my = _agent(tmp_path, "replica-my", server, {"app.my": mysql_database})
    for agent in (on_pg, on_my):
        agent.start_with_token(token)
    try:
        for agent in (on_pg, on_my):
            wait_until(agent.ready.exists, 30, f"{agent.tmp.name}'s readiness probe")
        with server.client() as client, ThreadPoolExecutor(8) as pool:
            environments = ["pg" if n % 2 else "my" for n in range(REQUESTS)]
            ids = list(
                pool.map(
                    lambda pair: _create(client, pair[1], f"SELECT {pair[0]} AS n"),
                    enumerate(environments),
                )
            )
            list(pool.map(lambda rid: wait_for_status(client, rid, "executed", 60), ids))

            # The registry shows each agent's last poll: one sent while its slots were
            # still full says `saturated` until the next poll, a moment later.
            my, pg = ({"database": "app", "environment": env} for env in ("my", "pg"))
            expected = [
                ("shared-agent", "replica-my", "healthy", [my]),
                ("shared-agent", "replica-pg", "healthy", [pg]),
            ]
            seen: list[object] = []

            def listed_healthy() -> bool:
                agents = client.get("/api/agents").json()["agents"]
                seen[:] = [
                    (a["id"], a["agent_id"], a["status"], a["capabilities"]["scopes"])
                    for a in agents
                ]
                return seen == expected

            try:
                wait_until(listed_healthy, 10, "both agents healthy with their own scopes")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last listed: {seen}") from None
    finally:
        for agent in (on_pg, on_my):
            agent.kill()

    for agent in (on_pg, on_my):
        assert "server answered 403" not in agent.log(), agent.log()


def _sleeping_backends(admin: psycopg.Connection[Any], marker: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbward-agent'"
        " AND strpos(query, %s) > 0 AND pid <> pg_backend_pid()",
        (marker,),
    ).fetchall()
    return [row[0] for row in rows]


def test_a_killed_agents_postgres_statement_stops_within_seconds(
    tmp_path: Path, server: ServerProcess, pg_database: str
) -> None:
    token = _agent_token(server, "doomed-agent")
    # No execution policy on the server: the agent's own (long) statement timeout applies.
    agent = _agent(tmp_path, "doomed", server, {"app.pg": pg_database}, statement_timeout_secs=120)
    agent.start_with_token(token)
    with psycopg.connect(pg_database, autocommit=True) as admin:
        try:
            wait_until(agent.ready.exists, 30, "the agent's readiness probe")
            with server.client() as client:
                request_id = _create(client, "pg", "SELECT pg_sleep(60) AS killed_agent_marker")
                wait_for_status(client, request_id, "running", 30)
            wait_until(
                lambda: bool(_sleeping_backends(admin, "killed_agent_marker")),
                10,
                "the agent's statement to run",
            )
            assert agent.proc is not None
            agent.proc.kill()  # SIGKILL: no cancel, no goodbye, the socket just closes
            agent.proc.wait(10)
            killed_at = time.monotonic()
            wait_until(
                lambda: not _sleeping_backends(admin, "killed_agent_marker"),
                10,
                "the backend of the killed agent to end",
            )
            print(f"backend gone {time.monotonic() - killed_at:.1f}s after the kill")
        finally:
            agent.kill()
