"""A real dbward server and agent as subprocesses, for the benchmarks.

Starts `dbward server` on a free loopback port with an always-auto-approve workflow for
`app/bench`, then one `dbward agent` per call of `start_agent`, both from this venv. The
agents serve a fresh PostgreSQL database created for the run and dropped by `stop`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
from _databases import fresh_postgres_database

DBWARD = str(Path(sys.executable).with_name("dbward"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Stack:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dbward-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.admin_token = ""
        self.agent_token = ""
        self.database_url = ""
        self._cleanup = ExitStack()

    def start_server(self, store_url: str | None = None) -> None:
        """The server, on its default SQLite store or on the PostgreSQL at `store_url`."""
        self.database_url = self._cleanup.enter_context(fresh_postgres_database())
        config = self.dir / "server.toml"
        store = "" if store_url is None else f'[store]\nurl = "{store_url}"\n'
        config.write_text(
            f'state_dir = "{self.dir / "state"}"\n'
            f'listen = "127.0.0.1:{self.port}"\n'
            "[[databases]]\n"
            'name = "app"\n'
            'environments = ["bench"]\n'
            "[[workflows]]\n"
            'database = "app"\n'
            'environment = "bench"\n'
            "explain = false\n"
            '[workflows.auto_approve]\nmode = "always"\n'
            "[[execution_policies]]\n"
            'database = "app"\n'
            'environment = "bench"\n'
            "max_executions = 1\n" + store
        )
        self._spawn([DBWARD, "server", "--config", str(config)], "server.log")
        wait_until(self._healthy, 30, "the server's /health")
        state = self.dir / "state"
        self.admin_token = (state / "admin-token").read_text().strip()
        self.agent_token = (state / "agent-token").read_text().strip()

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_agent(self, name: str, **settings: int) -> Path:
        ready = self.dir / f"{name}.ready"
        lines = [f'agent_id = "{name}"']
        lines += [f"{key} = {value}" for key, value in settings.items()]
        lines += [
            f'liveness_probe_path = "{self.dir / (name + ".alive")}"',
            f'readiness_probe_path = "{ready}"',
            "[schema_sync]",
            "enabled = false",
            "[server]",
            f'url = "{self.url}"',
            f'agent_token = "{self.agent_token}"',
            "[databases.app.bench]",
            f'url = "{self.database_url}"',
        ]
        config = self.dir / f"{name}.toml"
        config.write_text("\n".join(lines) + "\n")
        self._spawn([DBWARD, "agent", "--config", str(config)], f"{name}.log")
        wait_until(ready.exists, 30, f"agent {name} to be ready")
        return ready

    def _spawn(self, argv: list[str], log_name: str) -> None:
        log = (self.dir / log_name).open("wb")
        env = {**os.environ, "DBWARD_LOG_LEVEL": "warning"}
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))

    def stop_last(self) -> None:
        process = self.processes.pop()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()

    def stop(self) -> None:
        """Stop every process, newest first, then drop the run's database."""
        try:
            while self.processes:
                self.stop_last()
        finally:
            self._cleanup.close()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=httpx.Timeout(30, read=330),
        )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def verdict(met: bool) -> str:
    """How a target prints: a missed one is reported, never an exit status, because `make
    bench` stops at the first failing script and the ones after it must still run."""
    return "met" if met else "NOT met"


def route_totals(client: httpx.Client) -> dict[tuple[str, str], tuple[float, float]]:
    """`(method, route) -> (seconds sum, count)` of the server's own API timing
    (`dbward_http_request_duration_seconds` on `/metrics`): what each call cost inside the
    server, without the network and the client."""
    totals: dict[tuple[str, str], list[float]] = {}
    text = client.get("/metrics").raise_for_status().text
    for line in text.splitlines():
        if not line.startswith("dbward_http_request_duration_seconds_"):
            continue
        name, _, value = line.rpartition(" ")
        kind = name.split("{", 1)[0].rsplit("_", 1)[1]
        if kind not in ("sum", "count"):
            continue
        labels = dict(
            part.split("=", 1) for part in name.split("{", 1)[1].rstrip("}").split(",") if part
        )
        key = (labels["method"].strip('"'), labels["route"].strip('"'))
        entry = totals.setdefault(key, [0.0, 0.0])
        entry[0 if kind == "sum" else 1] = float(value)
    return {key: (entry[0], entry[1]) for key, entry in totals.items()}


def mean_ms_between(
    before: dict[tuple[str, str], tuple[float, float]],
    after: dict[tuple[str, str], tuple[float, float]],
    method: str,
    route: str,
) -> float:
    """The server's mean time per call of one route between two `route_totals` reads."""
    total, count = after.get((method, route), (0.0, 0.0))
    total0, count0 = before.get((method, route), (0.0, 0.0))
    return (total - total0) * 1000 / max(count - count0, 1)


def submit(client: httpx.Client, sql: str = "SELECT 1") -> str:
    response = client.post(
        "/api/requests",
        json={
            "database": "app",
            "environment": "bench",
            "operation": "execute_select",
            "detail": sql,
        },
    )
    response.raise_for_status()
    request_id: str = response.json()["id"]
    return request_id


def wait_result(client: httpx.Client, request_id: str) -> dict[str, object]:
    while True:
        response = client.get(f"/api/requests/{request_id}/result/stream")
        if response.status_code == 200:
            body: dict[str, object] = response.json()
            return body
        if response.status_code != 204:
            response.raise_for_status()
