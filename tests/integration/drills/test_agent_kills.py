"""Drill: the agent is killed (SIGKILL) and restarted three times under load.

Four client threads create 300 auto-approved requests over HTTP against a real
`dbward server`: SELECTs, and every third one an INSERT of a tag unique to it into a
scratch table, so the database counts how often each write ran. While they do, the
`dbward agent` process is killed at three points of the load and a new one started.

Every request must settle (executed, failed or execution_lost) within the lease plus
30 s of the last kill; no write may have run twice; every lost request is resumable and
then runs once more, to `executed` (docs/server.md §1.4).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from tests.integration.agent_process import AgentProcess, wait_until
from tests.integration.drills.processes import LEASE_SECS, create, drill_agent, drill_server, settle

pytestmark = pytest.mark.integration

CLIENTS = 4
REQUESTS_PER_CLIENT = 75
#: How many requests exist when each kill comes.
KILL_AT_CREATED = (25, 60, 95)
WRITE_EVERY = 3


def _rows_per_tag(pg_database: str) -> Counter[str]:
    with psycopg.connect(pg_database) as db:
        return Counter(
            {tag: n for tag, n in db.execute("SELECT tag, count(*) FROM effects GROUP BY tag")}
        )


def test_requests_settle_once_each_while_the_agent_is_killed_three_times(
    tmp_path: Path, pg_database: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as setup:
        setup.execute("CREATE TABLE effects (tag text NOT NULL)")
    server = drill_server(tmp_path).start()
    token = server.create_agent_token("drill-agent")
    agents: list[AgentProcess] = []

    def start_agent() -> None:
        agent = drill_agent(tmp_path, f"agent-{len(agents)}", server.url, pg_database)
        agents.append(agent.start_with_token(token))
        wait_until(agent.ready.exists, 30, f"{agent.tmp.name}'s readiness probe")

    #: request id → the tag its INSERT writes, "" for a SELECT.
    tags: dict[str, str] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            with server.client() as http:
                for i in range(REQUESTS_PER_CLIENT):
                    tag = f"c{number}-{i}" if i % WRITE_EVERY == 0 else ""
                    sql = (
                        f"INSERT INTO effects (tag) VALUES ('{tag}')" if tag else "SELECT 1 AS one"
                    )
                    request_id = create(http, sql)
                    with lock:
                        tags[request_id] = tag
                    # Watch it for a moment, as a client would: paces the load.
                    http.get(f"/api/requests/{request_id}", params={"wait": 1})
        except BaseException as exc:
            errors.append(exc)

    try:
        start_agent()
        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for threshold in KILL_AT_CREATED:
            wait_until(
                lambda n=threshold: len(tags) >= n or bool(errors), 120, f"{threshold} requests"
            )
            assert not errors, errors
            victim = agents[-1]
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            start_agent()
        last_kill = time.monotonic()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert len(tags) == CLIENTS * REQUESTS_PER_CLIENT

        deadline = last_kill + LEASE_SECS + 30
        with server.client() as http:
            statuses = {request_id: settle(http, request_id, deadline) for request_id in tags}
            settled_secs = time.monotonic() - started
            counts = Counter(statuses.values())
            assert counts["failed"] == 0, counts

            # No write ran twice, and every executed one ran exactly once.
            rows = _rows_per_tag(pg_database)
            assert max(rows.values()) == 1, [tag for tag, n in rows.items() if n > 1]
            for request_id, status in statuses.items():
                if tags[request_id] and status == "executed":
                    assert rows[tags[request_id]] == 1, request_id

            # Lost requests resume and run once more (a write that had run, twice: the
            # resume warns it may have run already).
            lost = [request_id for request_id, status in statuses.items() if status != "executed"]
            for request_id in lost:
                resumed = http.post(f"/api/requests/{request_id}/resume", json={})
                assert resumed.status_code == 200, resumed.text
                assert resumed.json()["resumed_from"] == "execution_lost"
            resume_deadline = time.monotonic() + 60
            for request_id in lost:
                assert settle(http, request_id, resume_deadline) == "executed", request_id
            after = _rows_per_tag(pg_database)
            for request_id in lost:
                tag = tags[request_id]
                if tag:
                    assert after[tag] == rows[tag] + 1, (request_id, rows[tag], after[tag])
            assert http.get("/api/audit/verify").json()["valid"] is True
        print(  # the drill's figures, shown with -s
            f"agent kills: {dict(counts)}, {len(lost)} lost and resumed,"
            f" settled in {settled_secs:.1f}s"
        )
    finally:
        for agent in agents:
            agent.kill()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)
