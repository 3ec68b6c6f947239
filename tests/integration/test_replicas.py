"""Two `dbward server` replicas that share nothing but a PostgreSQL store (docs/deploy.md).

Each replica has its own state dir; both get the same key-encryption key. The agent
long-polls replica B only, while requests are created on replica A: the NOTIFY from A
wakes B's held poll, the result is readable from both, both publish one public key, and a
request in flight when A is killed with SIGKILL still completes and reads through B.
"""

from __future__ import annotations

import base64
import os
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.shared.timestamps import parse_timestamp
from tests.integration.agent_process import AgentProcess, wait_until
from tests.integration.conftest import _with_path
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def shared_store(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database that only the two replicas use; dropped afterwards."""
    name = f"dbward_replicas_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_path(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica(tmp: Path, store_url: str) -> ServerProcess:
    tmp.mkdir()
    process = ServerProcess(tmp)
    with process.config.open("a") as config:
        config.write(f'[store]\nurl = "{store_url}"\n')
    return process


def create(client: httpx.Client, sql: str) -> str:
    created = client.post(
        "/api/requests",
        json={"database": "app", "environment": "pg", "operation": "execute_query",
              "detail": sql},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    request_id: str = created.json()["id"]
    return request_id


def result(client: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(f"/api/requests/{request_id}/result/stream")
        if response.status_code == 200:
            envelope: dict[str, Any] = response.json()
            return envelope
        assert response.status_code == 204, response.text
    raise AssertionError(f"no result for {request_id}")


def create_to_claim_ms(client: httpx.Client, request_id: str) -> float:
    request = client.get(f"/api/requests/{request_id}").json()
    executions = client.get(f"/api/requests/{request_id}/executions").json()["executions"]
    claimed = parse_timestamp(executions[0]["created_at"])
    return (claimed - parse_timestamp(request["created_at"])).total_seconds() * 1000


def test_two_replicas_on_one_postgresql_store_share_keys_results_and_wake_ups(
    tmp_path: Path, shared_store: str, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBWARD_KEY_ENCRYPTION_KEY", base64.b64encode(os.urandom(32)).decode())
    a = replica(tmp_path / "a", shared_store).start()
    b = replica(tmp_path / "b", shared_store).start()
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(agent_dir, b.url, {"app.pg": pg_database}, poll_wait_ms=20000)
    try:
        # B wrote the bootstrap token files from the store into its own state dir.
        assert b.admin_token == a.admin_token
        agent_token = (b.state / "agent-token").read_text().strip()
        agent.start_with_token(agent_token)
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")

        # One signing key: what B publishes verifies what A signs.
        as_agent = {"Authorization": f"Bearer {agent_token}"}
        key_a = httpx.get(f"{a.url}/api/public-key", headers=as_agent).json()["public_key"]
        key_b = httpx.get(f"{b.url}/api/public-key", headers=as_agent).json()["public_key"]
        assert key_a == key_b
        with a.client() as on_a, b.client() as on_b:
            # Each replica says its LISTEN connection is up.
            for client in (on_a, on_b):
                wait_until(
                    lambda c=client: "dbward_wake_listener_connected 1.0" in c.get("/metrics").text,
                    10,
                    "the wake listener gauge",
                )
            head = on_a.get("/api/audit/head").json()
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_b)).verify(
                bytes.fromhex(head["signature"]), head["signed_message"].encode()
            )

            # Work created on A reaches the agent held on B by NOTIFY, not by a re-check.
            latencies = []
            for n in range(30):
                request_id = create(on_a, f"SELECT {n} AS n")
                envelope = result(on_a, request_id)
                assert envelope["success"] is True, envelope
                assert envelope["result_data"]["rows"] == [{"n": n}]
                # Any replica serves any result: the content is in the store.
                content = on_b.get(f"/api/requests/{request_id}/result/content")
                assert content.status_code == 200, content.text
                assert content.json()["result_data"]["rows"] == [{"n": n}]
                latencies.append(create_to_claim_ms(on_b, request_id))
            p50 = statistics.median(latencies)
            # The same path within one replica, for scale: what NOTIFY adds is the difference.
            local = []
            for n in range(10):
                request_id = create(on_b, f"SELECT {n} AS n")
                assert result(on_b, request_id)["success"] is True
                local.append(create_to_claim_ms(on_b, request_id))
            print(f"\ncreate -> claim, p50 over {len(latencies)} requests: created on replica A "
                  f"{p50:.1f} ms (max {max(latencies):.1f}); created on replica B (the agent's) "
                  f"{statistics.median(local):.1f} ms")  # fmt: skip
            assert p50 < 200, latencies

            # A request created on A is running on the agent when A dies.
            request_id = create(on_a, "SELECT pg_sleep(2), 42 AS answer")
            wait_until(
                lambda: on_b.get(f"/api/requests/{request_id}").json()["status"] == "running",
                30,
                "the request to run",
            )
            assert a.proc is not None
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            envelope = result(on_b, request_id)
            assert envelope["success"] is True, envelope
            assert envelope["result_data"]["rows"] == [{"pg_sleep": "", "answer": 42}]
            shown = on_b.get(f"/api/requests/{request_id}").json()
            assert shown["status"] == "executed"
            assert on_b.get("/api/audit/verify").json()["valid"] is True
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
        for process in (a, b):
            if process.proc is not None and process.proc.poll() is None:
                process.stop()


def test_a_replica_without_the_key_encryption_key_refuses_to_start(
    tmp_path: Path, shared_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBWARD_KEY_ENCRYPTION_KEY", raising=False)
    process = replica(tmp_path / "a", shared_store)
    with pytest.raises(AssertionError, match="DBWARD_KEY_ENCRYPTION_KEY"):
        process.start()
    assert process.proc is not None and process.proc.wait(10) == 1


def test_a_replica_with_another_key_encryption_key_refuses_to_start(
    tmp_path: Path, shared_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBWARD_KEY_ENCRYPTION_KEY", base64.b64encode(b"\x01" * 32).decode())
    first = replica(tmp_path / "a", shared_store).start()
    try:
        monkeypatch.setenv("DBWARD_KEY_ENCRYPTION_KEY", base64.b64encode(b"\x02" * 32).decode())
        second = replica(tmp_path / "b", shared_store)
        with pytest.raises(AssertionError, match="does not open with this server's key"):
            second.start()
    finally:
        first.stop()
