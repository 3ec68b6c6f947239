"""Real server and agent processes for the fault drills, configured for short waits.

The server sweeps leases every second and, by default, has an execution policy that
allows a lost request to be resumed (`max_executions = 2`); the lease itself is the
server's 60 s minimum (docs/protocol.md §6.2), the shortest a drill can wait for a lost
execution.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.integration.agent_process import AgentProcess
from tests.integration.test_end_to_end import ServerProcess

#: The server's minimum lease (docs/protocol.md §6.2).
LEASE_SECS = 60
#: Final for a drill: the request has an outcome, or its lease ran out (resumable).
SETTLED = frozenset({"executed", "failed", "execution_lost"})


def drill_server(tmp: Path, *, execution_policy: bool = True) -> ServerProcess:
    """A server (not started) for database `app`, environment `pg`, always auto-approved.

    Without `execution_policy` no policy matches: the claim carries no statement timeout,
    so the agent's own applies, and the lease is the built-in 60 s (docs/server.md §3.1).
    """
    process = ServerProcess(tmp)
    policy = "[[execution_policies]]\nmax_executions = 2\n" if execution_policy else ""
    process.config.write_text(
        f'state_dir = "{process.state}"\n'
        f'listen = "127.0.0.1:{process.port}"\n'
        "[[databases]]\n"
        'name = "app"\n'
        'environments = ["pg"]\n'
        "[[workflows]]\n"
        'database = "app"\n'
        'auto_approve = { mode = "always" }\n'
        f"{policy}"
        "[sweeps]\n"
        "lease_reclaim_interval_secs = 1\n"
    )
    return process


def drill_agent(
    tmp: Path, name: str, server_url: str, pg_database: str, **keys: object
) -> AgentProcess:
    directory = tmp / name
    directory.mkdir()
    return AgentProcess(
        directory,
        server_url,
        {"app.pg": pg_database},
        agent_id=name,
        poll_wait_ms=20000,
        max_concurrent_tasks=4,
        lease_duration_secs=10,  # the server grants its 60 s minimum
        **keys,
    )


def create(client: httpx.Client, sql: str) -> str:
    """Create an auto-approved request for `sql`; its id."""
    created = client.post(
        "/api/requests", json={"database": "app", "environment": "pg", "detail": sql}
    )
    assert created.status_code == 201, created.text
    request_id: str = created.json()["id"]
    return request_id


def settle(client: httpx.Client, request_id: str, deadline: float) -> str:
    """The request's status once it is SETTLED; fails when it is not by `deadline` (a
    `time.monotonic()` value). The first look does not wait, so a request that settled
    long ago passes even when earlier ones used the time up (`execution_lost` is not
    final: a long-poll on it waits its whole time for a resume)."""
    wait = 0
    while True:
        shown = client.get(f"/api/requests/{request_id}", params={"wait": wait})
        assert shown.status_code == 200, shown.text
        status = shown.json()["status"]
        if status in SETTLED:
            return str(status)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"request {request_id} is still {status} at its deadline")
        wait = max(1, min(5, int(remaining)))
