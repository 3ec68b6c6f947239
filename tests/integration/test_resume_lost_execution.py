"""A lost execution resumed, with real processes (docs/server.md §1.4).

A real `dbward agent` claims a query that blocks on a table lock the test holds, and is
killed (SIGKILL) mid-run. The real `dbward server` declares the execution lost when its
lease (the 60 s minimum) runs out; the request is `execution_lost`. The requester resumes
it with `dbward request resume`, which warns that the statement may have run once already
and, off a terminal, resumes only with `-y`; a second agent process runs it to `executed`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

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

#: The server's minimum lease (docs/protocol.md §6.2) plus sweeps and slack.
LOST_WITHIN_SECS = 90


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    process.config.write_text(
        f'state_dir = "{process.state}"\n'
        f'listen = "127.0.0.1:{process.port}"\n'
        "[[databases]]\n"
        'name = "app"\n'
        'environments = ["pg"]\n'
        "[[workflows]]\n"
        'database = "app"\n'
        'auto_approve = { mode = "always" }\n'
        "[[execution_policies]]\n"
        "max_executions = 2\n"
        "[sweeps]\n"
        "lease_reclaim_interval_secs = 1\n"
    )
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def _agent(tmp_path: Path, name: str, server: ServerProcess, pg_database: str) -> AgentProcess:
    directory = tmp_path / name
    directory.mkdir()
    return AgentProcess(
        directory,
        server.url,
        {"app.pg": pg_database},
        agent_id=name,
        poll_wait_ms=20000,
        lease_duration_secs=10,  # the server grants its 60 s minimum
    )


def test_a_killed_agents_request_is_lost_then_resumed_and_run_by_another_agent(
    tmp_path: Path, server: ServerProcess, pg_database: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as setup:
        setup.execute("CREATE TABLE held (n int)")
        setup.execute("INSERT INTO held VALUES (1)")
    token = server.create_agent_token("pg-agent")
    lock = psycopg.connect(pg_database)
    first = _agent(tmp_path, "agent-a", server, pg_database)
    second = _agent(tmp_path, "agent-b", server, pg_database)
    try:
        lock.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")  # the query will block
        first.start_with_token(token)
        wait_until(first.ready.exists, 30, "agent-a's readiness probe")
        with server.client() as client:
            created = client.post(
                "/api/requests",
                json={"database": "app", "environment": "pg", "detail": "SELECT n FROM held"},
            )
            assert created.status_code == 201, created.text
            request_id = created.json()["id"]
            wait_for_status(client, request_id, "running", 30)

            first.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            first.wait(10)
            wait_for_status(client, request_id, "execution_lost", LOST_WITHIN_SECS)
            lock.rollback()  # the table is free again

            cli_env = {
                **os.environ,
                "DBWARD_SERVER_URL": server.url,
                "DBWARD_TOKEN": server.admin_token,
            }

            def resume(*options: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [DBWARD, "request", "resume", request_id, "--format", "json", *options],
                    capture_output=True, text=True, env=cli_env, timeout=120,
                    stdin=subprocess.DEVNULL, check=False,
                )  # fmt: skip

            # It may have run: without -y (and no terminal) the CLI does not resume it.
            unconfirmed = resume()
            assert unconfirmed.returncode == 1, unconfirmed
            assert json.loads(unconfirmed.stdout)["error"]["code"] == "confirmation_required"
            assert "may already have run" in unconfirmed.stderr
            assert client.get(f"/api/requests/{request_id}").json()["status"] == "execution_lost"

            second.start_with_token(token)
            wait_until(second.ready.exists, 30, "agent-b's readiness probe")
            resumed = resume("-y")
            assert resumed.returncode == 0, resumed
            assert "may have run once already" in resumed.stderr  # the server's warning too
            envelope = json.loads(resumed.stdout)["data"]["result"]
            assert envelope["success"] is True, envelope
            assert envelope["result_data"]["rows"] == [{"n": 1}]

            shown = client.get(f"/api/requests/{request_id}").json()
            assert shown["status"] == "executed"
            history = client.get(f"/api/requests/{request_id}/executions").json()["executions"]
            assert [e["status"] for e in history] == ["completed", "failed"]
            assert history[1]["error_message"] == "lease expired"
            events = client.get(
                "/api/audit/events", params={"request_id": request_id, "limit": 50}
            ).json()["events"]
            kinds = [event["event_type"] for event in reversed(events)]
            assert kinds == [
                "request.auto_approved",
                "request.dispatched",
                "execution.started",
                "execution.lost",
                "request.dispatched",
                "execution.started",
                "execution.completed",
            ]
            assert client.get("/api/audit/verify").json()["valid"] is True
    finally:
        lock.close()
        first.kill()
        if second.proc is not None:
            second.signal(signal.SIGTERM)
            second.wait(30)
        second.kill()
    assert server.stop() == 0, server.log_path.read_text()
