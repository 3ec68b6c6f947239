"""The production workflow of `examples/server.toml`, as written, with real processes.

A real `dbward server` loads the example file unchanged (copied next to its state dir; only
`--listen` is given on the command line) and a real `dbward agent` serves
`app/production` on PostgreSQL or MariaDB. The bootstrap admin creates a requester, an
`approver` and a `dba` through the API; the requester's write waits for the two steps the
example names (docs/server.md §2.4), is refused to the requester itself, to the DBA at
step 1 and to the step-1 approver at step 2, runs only once the requester resumes it
(§1.4), and the requester reads its result (§1.8).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pymysql
import pytest

from tests.integration.agent_process import AgentProcess, wait_for_status, wait_until
from tests.integration.test_end_to_end import ServerProcess
from tests.repo import REPO_ROOT

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "examples" / "server.toml"
TABLE = "CREATE TABLE orders (id int PRIMARY KEY, note varchar(40))"
WRITE = "INSERT INTO orders (id, note) VALUES (7, 'refund')"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    shutil.copyfile(EXAMPLE, process.config)  # as written: state_dir = "./data"
    process.state = tmp_path / "data"
    process.options = ["--listen", f"127.0.0.1:{process.port}"]
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def _postgres(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    def run(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    return run


def _mariadb(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    parts = httpx.URL(url)

    def run(sql: str) -> list[tuple[Any, ...]]:
        conn = pymysql.connect(
            host=parts.host,
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/"),
            autocommit=True,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        finally:
            conn.close()

    return run


@pytest.fixture(params=["postgresql", "mariadb"])
def target(request: pytest.FixtureRequest) -> tuple[str, Callable[[str], list[tuple[Any, ...]]]]:
    """The production database of one engine, with the table the write goes to."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_database")
        run = _postgres(url)
    else:
        url = request.getfixturevalue("mysql_database")
        run = _mariadb(url)
    run(TABLE)
    return url, run


def _as(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10, read=60),
    )


def test_the_example_production_workflow_runs_a_write_after_both_steps_and_a_resume(
    tmp_path: Path,
    server: ServerProcess,
    target: tuple[str, Callable[[str], list[tuple[Any, ...]]]],
) -> None:
    assert server.config.read_bytes() == EXAMPLE.read_bytes()
    url, run = target
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(agent_dir, server.url, {"app.production": url}, poll_wait_ms=20000)
    agent.start_with_token((server.state / "agent-token").read_text().strip())
    try:
        tokens: dict[str, str] = {}
        with server.client() as admin:
            for user, role in (("rita", "requester"), ("alex", "approver"), ("dora", "dba")):
                created = admin.post("/api/users", json={"id": user, "roles": [role]})
                assert created.status_code == 201, created.text
                tokens[user] = created.json()["token"]
        rita, alex, dora = (_as(server, tokens[name]) for name in ("rita", "alex", "dora"))
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")

        body = {"database": "app", "environment": "production", "detail": WRITE}
        no_reason = rita.post("/api/requests", json=body)
        assert no_reason.status_code == 400, no_reason.text  # require_reason = true
        created = rita.post("/api/requests", json={**body, "reason": "refund for order 7"})
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        assert created.json()["status"] == "pending"
        assert created.json()["operation"] == "execute_dml"
        assert created.json()["approvers"] == ["role:approver"]

        approve = f"/api/requests/{request_id}/approve"
        assert rita.post(approve, json={}).status_code == 403  # allow_self_approve = false
        assert dora.post(approve, json={}).status_code == 403  # step 1 is role:approver
        first = alex.post(approve, json={"comment": "WHERE checked"})
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "pending"
        assert (first.json()["current_step"], first.json()["total_steps"]) == (1, 2)
        assert rita.get(f"/api/requests/{request_id}").json()["approvers"] == ["role:dba"]
        assert alex.post(approve, json={}).status_code == 403  # one person, one step
        second = dora.post(approve, json={})
        assert second.status_code == 200, second.text
        assert second.json()["status"] == "approved"
        assert second.json()["matched_selector"] == "role:dba"

        assert run("SELECT count(*) FROM orders") == [(0,)]  # approved is not run
        resumed = rita.post(f"/api/requests/{request_id}/resume", json={})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["resumed_from"] == "approved"
        wait_for_status(rita, request_id, "executed", 60)

        stream = rita.get(f"/api/requests/{request_id}/result/stream")
        assert stream.status_code == 200, stream.text
        assert stream.json()["success"] is True
        assert stream.json()["rows_affected"] == 1
        assert rita.get(f"/api/requests/{request_id}/result/content").status_code == 200
        assert run("SELECT id, note FROM orders") == [(7, "refund")]

        with server.client() as admin:
            assert admin.get("/api/audit/verify").json()["valid"] is True
            events = admin.get(
                "/api/audit/events", params={"request_id": request_id, "limit": 50}
            ).json()["events"]
        kinds = [event["event_type"] for event in reversed(events)]
        assert kinds == [
            "request.created",
            "step.approved",
            "request.approved",
            "request.dispatched",
            "execution.started",
            "execution.completed",
        ]
        for client in (rita, alex, dora):
            client.close()
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
    assert server.stop() == 0, server.log_path.read_text()
