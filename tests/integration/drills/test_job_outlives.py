"""Drills: a running job outlives its server process, and outlives its lease.

The job is `SELECT n FROM held` while the test holds an exclusive lock on `held`: the
statement stalls in the database for exactly as long as the test says, and finishes the
moment the lock is released.

* The server is killed (SIGKILL) mid-job and comes back only after the job has finished:
  the agent keeps the job, retries its result (docs/protocol.md §7.1), and the result
  lands on the restarted server.
* The stall lasts longer than the lease (the built-in 60 s, §6.2): heartbeats renew it,
  the request stays `running`, and the result is accepted as an ordinary completion, not
  a late one (§7.3). A statement outlives its lease only where no execution policy
  matches: a policy's timeout `t` always gets a lease of at least `t + 30` s. So the
  server has none, and the agent's own `statement_timeout_secs` outlasts the lease.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.integration.agent_process import AgentProcess, wait_for_status, wait_until
from tests.integration.drills.processes import LEASE_SECS, create, drill_agent, drill_server, settle
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration


@dataclass
class Stalled:
    """A server, an agent, and a request stalled on the test's lock while `running`."""

    server: ServerProcess
    agent: AgentProcess
    lock: psycopg.Connection[tuple[object, ...]]
    request_id: str
    running_since: float


@contextmanager
def stall(tmp_path: Path, pg_database: str, *, execution_policy: bool) -> Iterator[Stalled]:
    """A request `running` on a real agent, its statement waiting for the test's lock."""
    with psycopg.connect(pg_database, autocommit=True) as setup:
        setup.execute("CREATE TABLE held (n int)")
        setup.execute("INSERT INTO held VALUES (1)")
    server = drill_server(tmp_path, execution_policy=execution_policy).start()
    agent = drill_agent(
        tmp_path, "agent", server.url, pg_database, statement_timeout_secs=LEASE_SECS + 60
    )
    lock = psycopg.connect(pg_database)
    try:
        lock.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        agent.start_with_token(server.create_agent_token("drill-agent"))
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        with server.client() as http:
            request_id = create(http, "SELECT n FROM held")
            wait_for_status(http, request_id, "running", 30)
        # `running` is committed before the claim's answer is sent: the agent holds the
        # job only once it has logged the claim.
        wait_until(lambda: "claimed execution" in agent.log(), 30, "the agent to hold the job")
        yield Stalled(server, agent, lock, request_id, time.monotonic())
    finally:
        lock.close()
        agent.kill()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def _assert_completed_once(stalled: Stalled) -> None:
    """Executed with the row, one completed execution, completed on time, chain intact."""
    with stalled.server.client() as http:
        stream = http.get(f"/api/requests/{stalled.request_id}/result/stream")
        assert stream.status_code == 200, stream.text
        assert stream.json()["result_data"]["rows"] == [{"n": 1}]
        history = http.get(f"/api/requests/{stalled.request_id}/executions").json()
        assert [e["status"] for e in history["executions"]] == ["completed"]
        events = http.get(
            "/api/audit/events", params={"request_id": stalled.request_id, "limit": 50}
        ).json()["events"]
        completed = [e for e in events if e["event_type"] == "execution.completed"]
        assert len(completed) == 1 and "execution.lost" not in str(events)
        assert http.get("/api/audit/verify").json()["valid"] is True


def test_a_result_finished_while_the_server_was_dead_lands_after_its_restart(
    tmp_path: Path, pg_database: str
) -> None:
    with stall(tmp_path, pg_database, execution_policy=True) as stalled:
        _server_killed_mid_job(stalled)


def _server_killed_mid_job(stalled: Stalled) -> None:
    started = time.monotonic()
    server = stalled.server
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    stalled.lock.rollback()  # the job finishes while no server is there to take the result
    wait_until(
        lambda: "result submission failed" in stalled.agent.log(),
        20,
        "the agent's first failed result submission",
    )
    assert stalled.agent.proc is not None and stalled.agent.proc.poll() is None
    server.start()
    with server.client() as http:
        assert settle(http, stalled.request_id, time.monotonic() + 30) == "executed"
    # The agent logs the delivery once the server's answer is back, after the status moved.
    wait_until(
        lambda: "result delivered after" in stalled.agent.log(), 30, "the delivery in the log"
    )
    _assert_completed_once(stalled)
    print(f"server kill: result landed {time.monotonic() - started:.1f}s after the kill")


def test_a_stall_longer_than_the_lease_completes_under_heartbeats(
    tmp_path: Path, pg_database: str
) -> None:
    with stall(tmp_path, pg_database, execution_policy=False) as stalled:
        _stall_past_the_lease(stalled)


def _stall_past_the_lease(stalled: Stalled) -> None:
    # The lease would have run out and the 1 s sweep acted by now without heartbeats.
    past_lease = stalled.running_since + LEASE_SECS + 2
    with stalled.server.client() as http:
        while time.monotonic() < past_lease:
            shown = http.get(
                f"/api/requests/{stalled.request_id}",
                params={"wait": max(1, min(10, int(past_lease - time.monotonic())))},
            ).json()
            assert shown["status"] == "running", shown
        stalled.lock.rollback()
        assert settle(http, stalled.request_id, time.monotonic() + 30) == "executed"
    _assert_completed_once(stalled)
    print(f"stall: completed after {time.monotonic() - stalled.running_since:.1f}s running")
