"""Runs the real `dbward agent` process against the FakeServer over loopback HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.clock import RealClock
from tests.fakes.http_server import FakeHttpServer
from tests.fakes.server import FakeServer

AGENT_TOKEN = "dbw_" + "ab" * 16
DBWARD = Path(sys.executable).with_name("dbward")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def wait_for_status(client: httpx.Client, request_id: str, wanted: str, timeout: float) -> None:
    """Long-poll `GET /api/requests/{id}?wait=` until the request is `wanted`; fail naming
    the status it is in after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        shown: dict[str, Any] = client.get(f"/api/requests/{request_id}", params={"wait": 5}).json()
        status = shown["status"]
        if status == wanted:
            return
    raise AssertionError(f"request {request_id} is {status}, not {wanted}, after {timeout}s")


class AgentProcess:
    """One `dbward agent` subprocess with its own config, probes and log file."""

    def __init__(
        self,
        tmp: Path,
        server_url: str,
        databases: dict[str, str],
        *,
        schema_sync: bool = False,
        **keys: object,
    ):
        """`schema_sync` turns on the agent's snapshot upload (one pass at startup)."""
        self.tmp = tmp
        self.alive = tmp / "alive"
        self.ready = tmp / "ready"
        self.log_path = tmp / "agent.log"
        settings: dict[str, object] = {
            "agent_id": "e2e-agent",
            "poll_interval_ms": 50,
            "poll_wait_ms": 0,
            "heartbeat_interval_ms": 200,
            "startup_retry_initial_ms": 50,
            "startup_retry_max_ms": 200,
            "startup_max_wait_secs": 20,
            "drain_timeout_secs": 20,
            "liveness_probe_path": str(self.alive),
            "readiness_probe_path": str(self.ready),
            **keys,
        }
        lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
        sync = "true" if schema_sync else "false"
        lines += ["[schema_sync]", f"enabled = {sync}", "[server]", f'url = "{server_url}"']
        lines += ['agent_token = "${TEST_AGENT_TOKEN}"']
        for scope, url in databases.items():
            lines += [f"[databases.{scope}]", f'url = "{url}"']
        self.config = tmp / "agent.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        return self.start_with_token(AGENT_TOKEN)

    def start_with_token(self, token: str) -> AgentProcess:
        env = {**os.environ, "TEST_AGENT_TOKEN": token, "DBWARD_LOG_LEVEL": "debug"}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(DBWARD), "agent", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent did not exit within {timeout}s:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_fake_server(**kwargs: object) -> tuple[FakeServer, FakeHttpServer]:
    fake = FakeServer(RealClock(), **kwargs)  # type: ignore[arg-type]
    http = FakeHttpServer(fake, agent_token=AGENT_TOKEN).start()
    return fake, http
