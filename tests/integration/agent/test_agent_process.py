"""The real `dbward agent` process: real HTTP, real PostgreSQL, real signals and probes."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from domain.shared.scopes import Scope
from tests.fakes.http_server import FakeHttpServer
from tests.fakes.server import FakeServer
from tests.integration.agent_process import AgentProcess, free_port, start_fake_server, wait_until

pytestmark = pytest.mark.integration

APP = Scope("app", "production")


@pytest.fixture
def server() -> Iterator[tuple[FakeServer, FakeHttpServer]]:
    fake, http = start_fake_server()
    yield fake, http
    http.stop()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def test_agent_runs_a_select_over_http_and_drains_on_sigterm(
    tmp_path: Path,
    server: tuple[FakeServer, FakeHttpServer],
    pg_database: str,
    agents: list[AgentProcess],
) -> None:
    fake, http = server
    agent = AgentProcess(tmp_path, http.url, {"app.production": pg_database}).start()
    agents.append(agent)
    wait_until(agent.ready.exists, 20, "the readiness probe")
    assert agent.alive.exists()

    request = fake.dispatch("SELECT 1 AS n, 'x' AS s", scope=APP)
    assert fake.wait_for(lambda: fake.result_for(request.id) is not None, 20), agent.log()
    result = fake.result_for(request.id)
    assert result is not None and result.success, result
    data = json.loads(result.result_data or "")
    assert data["rows"] == [{"n": 1, "s": "x"}]
    assert data["truncated"] is False

    agent.signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    assert not agent.alive.exists() and not agent.ready.exists()
    assert any(poll.status.draining for poll in fake.polls)


def test_sigterm_while_the_server_is_unreachable_at_startup_exits_0(
    tmp_path: Path, pg_database: str, agents: list[AgentProcess]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    agent = AgentProcess(tmp_path, url, {"app.production": pg_database}).start()
    agents.append(agent)
    wait_until(agent.alive.exists, 20, "the liveness probe")
    wait_until(lambda: "not reachable yet" in agent.log(), 20, "a startup retry")
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0
    assert not agent.ready.exists()


def test_revoked_token_at_runtime_exits_1(
    tmp_path: Path,
    server: tuple[FakeServer, FakeHttpServer],
    pg_database: str,
    agents: list[AgentProcess],
) -> None:
    _, http = server
    agent = AgentProcess(tmp_path, http.url, {"app.production": pg_database}).start()
    agents.append(agent)
    wait_until(agent.ready.exists, 20, "the readiness probe")
    http.unauthorized = True
    assert agent.wait(30) == 1
    assert "revoked" in agent.log()


def test_second_sigterm_cancels_the_running_statement_and_exits_1(
    tmp_path: Path,
    server: tuple[FakeServer, FakeHttpServer],
    pg_database: str,
    agents: list[AgentProcess],
) -> None:
    fake, http = server
    agent = AgentProcess(tmp_path, http.url, {"app.production": pg_database}).start()
    agents.append(agent)
    wait_until(agent.ready.exists, 20, "the readiness probe")
    request = fake.dispatch("SELECT pg_sleep(60)", scope=APP)

    def sleeping() -> bool:
        with psycopg.connect(pg_database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"
            ).fetchone()
            return bool(row and row[0])

    wait_until(sleeping, 20, "the statement to run")
    agent.signal(signal.SIGTERM)
    wait_until(lambda: "draining" in agent.log(), 10, "the drain to start")
    agent.signal(signal.SIGTERM)
    assert agent.wait(20) == 1
    wait_until(lambda: not sleeping(), 3, "the backend to stop the statement")
    result = fake.result_for(request.id)
    assert result is not None and not result.success
    assert "cancelled" in (result.error_message or "")
