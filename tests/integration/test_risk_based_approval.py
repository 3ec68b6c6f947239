"""`risk_based` auto-approval decided by the live schema, with real processes.

A real `dbward server` with a `risk_based` workflow (risk `low`, `max_estimated_rows` 1000)
and a real `dbward agent` on PostgreSQL with schema sync on: once the agent's snapshot has
reached the server, a DELETE on a small table runs at once, one on a large table waits
for approval (`large_table`), and one on a parent whose ON DELETE CASCADE child is large
waits too (`cascade_delete` naming the child). docs/sql-safety.md §4.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.agent_process import AgentProcess, wait_for_status, wait_until
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

SCHEMA = (
    "CREATE TABLE small_t (id int PRIMARY KEY, note text)",
    "INSERT INTO small_t SELECT g, 'n' FROM generate_series(1, 10) g",
    "CREATE TABLE big_t (id int PRIMARY KEY, note text)",
    "INSERT INTO big_t SELECT g, 'n' FROM generate_series(1, 5000) g",
    "CREATE TABLE p (id int PRIMARY KEY)",
    "INSERT INTO p VALUES (1), (2)",
    "CREATE TABLE c (id int PRIMARY KEY, p_id int NOT NULL REFERENCES p (id) ON DELETE CASCADE)",
    "INSERT INTO c SELECT g, 1 + g % 2 FROM generate_series(1, 5000) g",
    "ANALYZE small_t",
    "ANALYZE big_t",
    "ANALYZE p",
    "ANALYZE c",
)


def _config(server: ServerProcess) -> str:
    return (
        f'state_dir = "{server.state}"\n'
        f'listen = "127.0.0.1:{server.port}"\n'
        "[[databases]]\n"
        'name = "app"\n'
        'environments = ["production"]\n'
        "[[workflows]]\n"
        'database = "app"\n'
        'environment = "production"\n'
        "[workflows.auto_approve]\n"
        'mode = "risk_based"\n'
        'risk = "low"\n'
        "max_estimated_rows = 1000\n"
        "[[workflows.steps]]\n"
        "[[workflows.steps.approvers]]\n"
        'role = "approver"\n'
    )


def _snapshot_synced(admin: httpx.Client) -> bool:
    events = admin.get(
        "/api/audit/events",
        params={"event_type": "schema.snapshot_updated", "database": "app", "limit": 5},
    )
    assert events.status_code == 200, events.text
    return bool(events.json()["events"])


def _create(client: httpx.Client, sql: str) -> dict[str, Any]:
    response = client.post(
        "/api/requests", json={"database": "app", "environment": "production", "detail": sql}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_risk_based_approval_follows_table_sizes_and_cascades(
    tmp_path: Path, pg_database: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
    server = ServerProcess(tmp_path)
    server.config.write_text(_config(server))
    server.start()
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(agent_dir, server.url, {"app.production": pg_database}, schema_sync=True)
    agent.start_with_token((server.state / "agent-token").read_text().strip())
    try:
        with server.client() as admin:
            created = admin.post("/api/users", json={"id": "rita", "roles": ["requester"]})
            assert created.status_code == 201, created.text
            token = created.json()["token"]
            wait_until(lambda: _snapshot_synced(admin), 60, "the agent's schema snapshot")
        rita = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10, read=60),
        )
        with rita:
            small = _create(rita, "DELETE FROM small_t WHERE id = 1")
            assert small["status"] == "dispatched", small
            wait_for_status(rita, small["id"], "executed", 60)

            big = _create(rita, "DELETE FROM big_t WHERE id = 1")
            assert big["status"] == "pending", big
            trace = rita.get(f"/api/requests/{big['id']}").json()["decision_trace"]
            assert trace["risk"]["schema_status"] == "ready"
            assert trace["risk"]["level"] == "medium"
            assert "large_table" in trace["risk"]["factors"]
            assert trace["decision"]["rule"] == "risk_based: medium > low"

            parent = _create(rita, "DELETE FROM p WHERE id = 1")
            assert parent["status"] == "pending", parent
            detail = rita.get(f"/api/requests/{parent['id']}").json()
            factors = detail["decision_trace"]["risk"]["factor_details"]
            cascades = [f["detail"] for f in factors if f["code"] == "cascade_delete"]
            assert cascades and "public.c" in cascades[0], factors
            assert detail["context"]["risk"]["level"] == "high"
            assert detail["context"]["tables"] == ["p"]

        with psycopg.connect(pg_database, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM small_t").fetchone() == (9,)
            assert conn.execute("SELECT count(*) FROM big_t").fetchone() == (5000,)
            assert conn.execute("SELECT count(*) FROM c").fetchone() == (5000,)
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
    assert server.stop() == 0, server.log_path.read_text()
