"""Metrics and structured logs of real `dbward server` and `dbward agent` processes.

Three auto-approved SELECTs run on PostgreSQL and one SELECT waits for approval; then the
server's `GET /metrics` (admin token), its `[metrics] listen` and the agent's
`metrics_listen` are scraped, parsed with prometheus_client's parser, and must count
exactly that. Both processes log JSON: every line must parse, and the lines about a
request must carry its id (docs/operations.md).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.agent_process import AgentProcess, free_port, wait_until
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = path.read_text().splitlines()
    assert lines, f"{path} is empty"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line in {path.name}: {line!r}") from None
    return parsed


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    process.metrics_port = free_port()  # type: ignore[attr-defined]
    process.config.write_text(
        f'state_dir = "{process.state}"\n'
        f'listen = "127.0.0.1:{process.port}"\n'
        "[metrics]\n"
        f'listen = "127.0.0.1:{process.metrics_port}"\n'  # type: ignore[attr-defined]
        "[logging]\n"
        'format = "json"\n'
        "[[databases]]\n"
        'name = "app"\n'
        'environments = ["pg", "prod"]\n'
        "[[workflows]]\n"
        'database = "app"\n'
        'environment = "pg"\n'
        'auto_approve = { mode = "always" }\n'
        "[[workflows]]\n"
        'database = "app"\n'
        'environment = "prod"\n'
        "[[workflows.steps]]\n"
        "[[workflows.steps.approvers]]\n"
        'role = "approver"\n'
    )
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def _create(client: httpx.Client, environment: str, sql: str) -> dict[str, str]:
    created = client.post(
        "/api/requests",
        json={"database": "app", "environment": environment, "operation": "execute_select",
              "detail": sql},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    body: dict[str, str] = created.json()
    return body


def _wait_for_result(client: httpx.Client, request_id: str) -> None:
    while True:
        response = client.get(f"/api/requests/{request_id}/result/stream")
        if response.status_code == 200:
            assert response.json()["success"] is True, response.text
            return
        assert response.status_code == 204, response.text


def test_metrics_and_json_logs_of_real_processes(
    tmp_path: Path, server: ServerProcess, pg_database: str
) -> None:
    with server.client() as admin:
        made = admin.post("/api/tokens", json={"subject_id": "metrics-agent",
            "subject_type": "agent", "scope_ceiling": {"roles": ["agent-default"]}})  # fmt: skip
        assert made.status_code == 201, made.text
        reader = admin.post("/api/users", json={"id": "reader", "roles": ["requester"]})
        assert reader.status_code == 201, reader.text
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent_metrics_port = free_port()
    agent = AgentProcess(
        agent_dir,
        server.url,
        {"app.pg": pg_database},
        poll_wait_ms=20000,
        metrics_listen=f"127.0.0.1:{agent_metrics_port}",
        log_format="json",
    )
    agent.start_with_token(made.json()["token"])
    try:
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        with server.client() as admin:
            dispatched = [
                _create(admin, "pg", f"SELECT {n} AS n, repeat('x', 100) AS pad")["id"]
                for n in range(3)
            ]
            for request_id in dispatched:
                _wait_for_result(admin, request_id)
            pending = _create(admin, "prod", "SELECT 1")
            assert pending["status"] == "pending"

            assert httpx.get(f"{server.url}/metrics").status_code == 401
            as_reader = {"Authorization": f"Bearer {reader.json()['token']}"}
            refused = httpx.get(f"{server.url}/metrics", headers=as_reader)
            assert refused.status_code == 403, refused.text

            # The agent's next long-poll is held by the server.
            def held() -> bool:
                scraped = parse(admin.get("/metrics").text)
                return value(scraped, "dbward_held_long_polls") >= 1

            wait_until(held, 30, "a held long-poll")
            scrape = admin.get("/metrics")
            assert scrape.status_code == 200
            assert scrape.headers["content-type"].startswith("text/plain")
            metrics = parse(scrape.text)
            events = admin.get("/api/audit/events", params={"limit": 100}).json()["events"]

        unauthenticated = parse(httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text)  # type: ignore[attr-defined]
        agent_metrics = parse(httpx.get(f"http://127.0.0.1:{agent_metrics_port}/metrics").text)
    finally:
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0, agent.log()
        agent.kill()
    assert server.stop() == 0, server.log_path.read_text()

    created = "dbward_requests_created_total"
    assert value(metrics, created, status="dispatched", operation="execute_select") == 3
    assert value(metrics, created, status="pending", operation="execute_select") == 1
    transitions = "dbward_request_transitions_total"
    assert value(metrics, transitions, to="dispatched") == 3
    assert value(metrics, transitions, to="running") == 3
    assert value(metrics, transitions, to="executed") == 3
    latency = "dbward_dispatch_latency_seconds_count"
    assert value(metrics, latency, operation="execute_select") == 3
    assert value(metrics, "dbward_agents_online") == 1
    assert value(metrics, "dbward_lease_expiries_total") == 0
    assert value(metrics, "dbward_audit_chain_length") == len(events)
    responses = "dbward_http_responses_total"
    assert value(metrics, responses, route="/api/requests", status_class="2xx") == 4
    assert value(metrics, responses, route="/metrics", status_class="4xx") == 2
    stream = "/api/requests/{request_id}/result/stream"
    assert value(metrics, "dbward_http_request_duration_seconds_count", method="GET",
                 route=stream) >= 3  # fmt: skip
    assert not [key for key in metrics if dict(key[1]).get("route", "").count("-") >= 4], (
        "a raw request id leaked into a route label"
    )
    # The unauthenticated listener serves the same registry.
    assert value(unauthenticated, created, status="dispatched", operation="execute_select") == 3

    assert value(agent_metrics, "dbward_agent_jobs_total", outcome="succeeded") == 3
    assert value(agent_metrics, "dbward_agent_jobs_total", outcome="failed") == 0
    assert value(agent_metrics, "dbward_agent_job_duration_seconds_count") == 3
    assert value(agent_metrics, "dbward_agent_result_bytes_total") > 300
    assert value(agent_metrics, "dbward_agent_database_up", scope="app/pg") == 1
    assert value(agent_metrics, "dbward_agent_polls_total") >= 1
    assert value(agent_metrics, "dbward_agent_poll_errors_total") == 0
    assert value(agent_metrics, "dbward_agent_heartbeat_failures_total") == 0

    server_lines = json_lines(server.log_path)
    agent_lines = json_lines(agent.log_path)
    for request_id in dispatched:
        about = [line for line in server_lines if line.get("request_id") == request_id]
        messages = {str(line["message"]) for line in about}
        assert "request created: execute_select, dispatched" in messages
        assert any(line.get("execution_id") for line in about), about
        by_agent = [line for line in agent_lines if line.get("job_id") == request_id]
        assert by_agent, f"no agent line carries job_id {request_id}"
        assert all(line["request_id"] == request_id for line in by_agent)
        assert any(line.get("execution_id") for line in by_agent), by_agent
    for line in server_lines + agent_lines:
        mentioned = [rid for rid in dispatched if rid in str(line["message"])]
        assert all(line.get("request_id") == rid for rid in mentioned), line
    assert any(
        line.get("request_id") == pending["id"] and line["message"].startswith("request created")  # type: ignore[union-attr]
        for line in server_lines
    )
