"""Per-database degraded mode end to end: the real agent process, two real databases.

One database is reached through a proxy the test cuts: its connections are killed
(pg_terminate_backend) and its host becomes unreachable. The agent keeps serving the other
database, stops advertising the lost one, and resumes it when it comes back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from domain.shared.scopes import Scope
from tests.fakes.http_server import FakeHttpServer
from tests.fakes.server import FakeServer
from tests.integration.agent_process import AgentProcess, start_fake_server, wait_until
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

APP = Scope("app", "production")
REPORTS = Scope("reports", "production")


@pytest.fixture
def second_pg_database(postgres_url: str) -> Iterator[str]:
    name = f"dbward_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(postgres_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _via(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}127.0.0.1:{proxy.port}", parts.path, "", ""))


def _run(fake: FakeServer, sql: str, scope: Scope, timeout: float = 20) -> tuple[bool, str]:
    request = fake.dispatch(sql, scope=scope)
    assert fake.wait_for(lambda: fake.result_for(request.id) is not None, timeout)
    result = fake.result_for(request.id)
    assert result is not None
    return result.success, result.result_data or result.error_message or ""


def _advertised(fake: FakeServer) -> set[Scope]:
    return set(fake.polls[-1].capabilities.scopes)


def test_a_lost_database_is_dropped_while_the_other_keeps_working_then_resumes(
    tmp_path: Path, pg_database: str, second_pg_database: str
) -> None:
    fake, http = start_fake_server()
    upstream = urlsplit(second_pg_database)
    proxy = TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432).restore()
    agent = AgentProcess(
        tmp_path,
        http.url,
        {"app.production": pg_database, "reports.production": _via(second_pg_database, proxy)},
    ).start()
    try:
        _check(fake, http, agent, proxy, second_pg_database)
    finally:
        agent.kill()
        proxy.cut()
        http.stop()


def _check(
    fake: FakeServer, http: FakeHttpServer, agent: AgentProcess, proxy: TcpProxy, reports_url: str
) -> None:
    wait_until(agent.ready.exists, 20, "the readiness probe")
    assert _run(fake, "SELECT 1 AS n", REPORTS)[0]
    assert _run(fake, "SELECT 1 AS n", APP)[0]

    # The reports database goes away: its backends are killed and its host cut off.
    with psycopg.connect(reports_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    proxy.cut()
    ok, error = _run(fake, "SELECT 2 AS n", REPORTS)
    assert not ok, error
    wait_until(lambda: _advertised(fake) == {APP}, 10, "reports to leave the advertised scopes")

    # The other database keeps working, and readiness stays (one database is usable).
    ok, data = _run(fake, "SELECT 3 AS n", APP)
    assert ok and json.loads(data)["rows"] == [{"n": 3}]
    assert agent.ready.exists()
    parked = fake.dispatch("SELECT 4 AS n", scope=REPORTS)
    polls = len(fake.polls)
    wait_until(lambda: len(fake.polls) >= polls + 5, 10, "five more polls")
    assert fake.requests[parked.id].status == "dispatched"  # not taken while its DB is down
    assert all(request_id != parked.id for request_id, _ in fake.claims)

    # The host comes back: the agent reconnects on its own and takes the parked job.
    proxy.restore()
    wait_until(lambda: _advertised(fake) == {APP, REPORTS}, 20, "reports to be advertised again")
    assert fake.wait_for(lambda: fake.result_for(parked.id) is not None, 20), agent.log()
    result = fake.result_for(parked.id)
    assert result is not None and result.success, result
    assert json.loads(result.result_data or "")["rows"] == [{"n": 4}]
    assert "is unavailable" in agent.log() and "is back" in agent.log()
