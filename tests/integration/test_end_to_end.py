"""End to end with real processes: `dbward server`, `dbward agent`, PostgreSQL and MariaDB.

An agent token is created with the brief's exact command, the agent serves one PostgreSQL
and one MariaDB database, requests under an always-auto-approve workflow are created over
HTTP, their results read from the stream, and the audit chain verifies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.agent_process import DBWARD, AgentProcess, free_port, wait_until

pytestmark = pytest.mark.integration


class ServerProcess:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = tmp / "state"
        self.config = tmp / "server.toml"
        self.config.write_text(
            f'state_dir = "{self.state}"\n'
            f'listen = "127.0.0.1:{self.port}"\n'
            "[[databases]]\n"
            'name = "app"\n'
            'environments = ["pg", "my"]\n'
            "[[workflows]]\n"
            'database = "app"\n'
            'auto_approve = { mode = "always" }\n'
            "[sweeps]\n"
            "lease_reclaim_interval_secs = 1\n"
        )
        self.log_path = tmp / "server.log"
        #: Command-line options after `--config` (e.g. `--listen` for a config kept as is).
        self.options: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [DBWARD, "server", "--config", str(self.config), *self.options],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._healthy, 30, "the server's /health")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited:\n{self.log_path.read_text()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def admin_token(self) -> str:
        return (self.state / "admin-token").read_text().strip()

    def create_agent_token(self, subject: str) -> str:
        """An agent token for `subject`, made with `dbward token create` as an operator would."""
        env = {**os.environ, "DBWARD_SERVER_URL": self.url, "DBWARD_TOKEN": self.admin_token}
        created = subprocess.run(
            [DBWARD, "token", "create", "--subject", subject, "--subject-type", "agent",
             "--role", "agent-default"],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        return created.stdout.strip()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=httpx.Timeout(10, read=60),
        )

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._log.close()
        return code


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path).start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def _run(client: httpx.Client, environment: str, sql: str) -> dict[str, object]:
    created = client.post(
        "/api/requests",
        json={"database": "app", "environment": environment, "operation": "execute_query",
              "detail": sql},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "dispatched"
    request_id = created.json()["id"]
    while True:
        response = client.get(f"/api/requests/{request_id}/result/stream")
        if response.status_code == 200:
            envelope: dict[str, object] = response.json()
            return envelope
        assert response.status_code == 204, response.text


def test_requests_run_through_real_server_and_agent_processes(
    tmp_path: Path, server: ServerProcess, pg_database: str, mysql_database: str
) -> None:
    env = {**os.environ, "DBWARD_SERVER_URL": server.url, "DBWARD_TOKEN": server.admin_token}
    created = subprocess.run(
        [DBWARD, "token", "create", "--subject", "prod-agent-1", "--subject-type", "agent",
         "--role", "agent-default"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    agent_token = created.stdout.strip()
    assert agent_token.startswith("dbw_") and len(agent_token) == 36

    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(
        agent_dir,
        server.url,
        {"app.pg": pg_database, "app.my": mysql_database},
        poll_wait_ms=20000,
    )
    agent.start_with_token(agent_token)
    try:
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        with server.client() as client:
            pg = _run(client, "pg", "SELECT 1 AS n, 'postgres' AS engine")
            assert pg["success"] is True, pg
            assert pg["result_data"]["rows"] == [{"n": 1, "engine": "postgres"}]  # type: ignore[index]
            my = _run(client, "my", "SELECT 2 AS n, 'mysql' AS engine")
            assert my["success"] is True, my
            assert my["result_data"]["rows"] == [{"n": 2, "engine": "mysql"}]  # type: ignore[index]
            dml = _run(client, "pg", "CREATE TABLE e2e (id int)")
            assert dml["success"] is True, dml
            # SLEEP makes the server run it as a write; its row still comes back.
            escalated = _run(client, "my", "SELECT SLEEP(0), 42 AS answer")
            assert escalated["success"] is True, escalated
            assert escalated["rows_affected"] == 1
            assert escalated["result_data"]["rows"] == [{"SLEEP(0)": 0, "answer": 42}]  # type: ignore[index]

            verdict = client.get("/api/audit/verify").json()
            assert verdict["valid"] is True and verdict["first_broken_id"] is None
            events = client.get("/api/audit/events", params={"limit": 200}).json()["events"]
            kinds = {event["event_type"] for event in events}
            assert {"request.auto_approved", "request.dispatched", "execution.started",
                    "execution.completed", "agent.registered"} <= kinds  # fmt: skip
            listed = client.get("/api/results").json()["results"]
            assert [(r["environment"], r["success"]) for r in listed] == [
                ("my", True),
                ("pg", True),
                ("my", True),
                ("pg", True),
            ]
            agents = client.get("/api/agents").json()["agents"]
            assert [a["id"] for a in agents] == ["prod-agent-1"]
            assert json.dumps(agents).count('"app"') == 2  # both scopes advertised
    finally:
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0, agent.log()
        agent.kill()
    assert server.stop() == 0, server.log_path.read_text()
