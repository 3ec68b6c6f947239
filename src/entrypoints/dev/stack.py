"""The processes of `dbward dev`: a PostgreSQL (embedded unless a URL is given), a server, an agent.

Everything lives in `./.dbward-dev/` (docs/workflows.md): the server's config and state
(`server.toml`, `data/`), the agent's config and probes, the client configs of the two dev
users (`client.toml` for the bootstrap admin, `reviewer.toml` and `reviewer-token` for the
approver), the embedded PostgreSQL's data (`postgres/`) and one log file per process. A
later run reuses the state: the bootstrap tokens, the reviewer and the sample rows are kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from adapters.cli_client.api_client import ApiClient, ApiError
from adapters.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

DATABASE = "app"
DEVELOPMENT = "development"
PRODUCTION = "production"
REVIEWER = "reviewer"
REVIEWER_ROLE = "approver"
AGENT_ID = "dev-agent"
#: How long each process gets to come up, and to stop before it is killed.
START_TIMEOUT_SECS = 30.0
STOP_TIMEOUT_SECS = 30.0
_POLL_SECS = 0.1

#: The sample schema: idempotent, so a second run over the same database changes nothing.
SAMPLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    country text NOT NULL
);
INSERT INTO customers (id, name, email, country) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'GB'),
    (2, 'Grace Hopper', 'grace@example.com', 'US'),
    (3, 'Alan Turing', 'alan@example.com', 'GB')
ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    amount numeric(10, 2) NOT NULL,
    status text NOT NULL
);
INSERT INTO orders (id, customer_id, amount, status) VALUES
    (101, 1, 120.00, 'paid'),
    (102, 2, 35.50, 'paid'),
    (103, 3, 99.90, 'open')
ON CONFLICT (id) DO NOTHING;
"""


class DevError(Exception):
    """A part of the dev stack could not start; the message says which and where to look."""


@dataclass
class DevPaths:
    root: Path

    @property
    def server_config(self) -> Path:
        return self.root / "server.toml"

    @property
    def state(self) -> Path:
        return self.root / "data"

    @property
    def agent_config(self) -> Path:
        return self.root / "agent.toml"

    @property
    def client_config(self) -> Path:
        return self.root / "client.toml"

    @property
    def reviewer_config(self) -> Path:
        return self.root / "reviewer.toml"

    @property
    def reviewer_token(self) -> Path:
        return self.root / "reviewer-token"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"


@dataclass
class DevStack:
    """The running stack; `stop()` ends every process it started, newest first."""

    paths: DevPaths
    port: int
    database_urls: dict[str, str] = field(default_factory=dict)
    admin_token: str = ""
    reviewer_token: str = ""
    postgres: EmbeddedPostgres | None = None  # None with a `--database-url`
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def failed_process(self) -> str | None:
        """The name of a process that has exited, if any."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_SECS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT_SECS)
        if self.postgres is not None:
            self.postgres.stop()
        for log in self._logs:
            log.close()

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.paths.log(name).open("ab")
        self._logs.append(log)
        # Our own interpreter and generated config paths: nothing untrusted reaches argv.
        self.processes[name] = subprocess.Popen(  # noqa: S603
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches `dbward dev` only; it stops them in order
        )


@contextmanager
def running_stack(root: Path, port: int, database_url: str | None) -> Iterator[DevStack]:
    """Start the whole stack under `root`; stop it, whatever happens, when the block ends."""
    paths = DevPaths(root)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    stack = DevStack(paths, port)
    try:
        stack.database_urls = _start_databases(stack, database_url)
        for url in dict.fromkeys(stack.database_urls.values()):
            _seed(url)
        _write_server_config(paths, port)
        dbward = [sys.executable, "-m", "entrypoints.cli"]
        stack.spawn("server", [*dbward, "server", "--config", str(paths.server_config)])
        _wait_healthy(stack)
        stack.admin_token = _read_token(paths.state / "admin-token")
        agent_token = _read_token(paths.state / "agent-token")
        _write_agent_config(paths, stack.url, stack.database_urls)
        env = {**os.environ, "DBWARD_AGENT_TOKEN": agent_token}
        stack.spawn("agent", [*dbward, "agent", "--config", str(paths.agent_config)], env)
        stack.reviewer_token = _reviewer(stack)
        _write_client_config(paths.client_config, stack.url, stack.admin_token)
        _write_client_config(paths.reviewer_config, stack.url, stack.reviewer_token)
        _write_secret(paths.reviewer_token, stack.reviewer_token + "\n")
        _wait_agent_ready(stack)
        yield stack
    finally:
        stack.stop()


def _start_databases(stack: DevStack, database_url: str | None) -> dict[str, str]:
    """`{environment: url}`: two databases of our own PostgreSQL, or the given URL for both."""
    if database_url is not None:
        return {DEVELOPMENT: database_url, PRODUCTION: database_url}
    postgres = EmbeddedPostgres(stack.paths.postgres_data, log_path=stack.paths.log("postgres"))
    stack.postgres = postgres
    try:
        postgres.start(START_TIMEOUT_SECS)
    except EmbeddedPostgresError as exc:
        raise DevError(f"the embedded PostgreSQL did not start: {exc}") from exc
    urls = {}
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        for environment in (DEVELOPMENT, PRODUCTION):
            name = f"{DATABASE}_{environment}"
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            urls[environment] = postgres.url(name)
    return urls


def _seed(url: str) -> None:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SAMPLE_SCHEMA.encode())
    except psycopg.Error as exc:
        raise DevError(f"could not create the sample schema on {redacted(url)}: {exc}") from exc


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_secret(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds a token)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _write_server_config(paths: DevPaths, port: int) -> None:
    paths.server_config.write_text(
        "# Generated by `dbward dev`: development runs at once, production needs one approval.\n"
        'state_dir = "data"\n'
        f'listen = "127.0.0.1:{port}"\n'
        "[[databases]]\n"
        f'name = "{DATABASE}"\n'
        f'environments = ["{DEVELOPMENT}", "{PRODUCTION}"]\n'
        "[[workflows]]\n"
        f'database = "{DATABASE}"\n'
        f'environment = "{DEVELOPMENT}"\n'
        'auto_approve = { mode = "always" }\n'
        "[[workflows]]\n"
        f'database = "{DATABASE}"\n'
        f'environment = "{PRODUCTION}"\n'
        "[[workflows.steps]]\n"
        "[[workflows.steps.approvers]]\n"
        f'role = "{REVIEWER_ROLE}"\n'
        "min = 1\n"
    )


def _write_agent_config(paths: DevPaths, server_url: str, urls: dict[str, str]) -> None:
    lines = [
        "# Generated by `dbward dev`.",
        f'agent_id = "{AGENT_ID}"',
        f"liveness_probe_path = {_toml_string(str(paths.root / 'agent-alive'))}",
        f"readiness_probe_path = {_toml_string(str(paths.root / 'agent-ready'))}",
        "[server]",
        f"url = {_toml_string(server_url)}",
        'agent_token = "${DBWARD_AGENT_TOKEN}"',
    ]
    for environment, url in urls.items():
        lines += [f"[databases.{DATABASE}.{environment}]", f"url = {_toml_string(url)}"]
    paths.agent_config.write_text("\n".join(lines) + "\n")


def _write_client_config(path: Path, server_url: str, token: str) -> None:
    text = (
        "# Generated by `dbward dev`.\n"
        f"[server]\nurl = {_toml_string(server_url)}\ntoken = {_toml_string(token)}\n"
    )
    _write_secret(path, text)


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DevError(f"the server wrote no {path.name} in {path.parent}") from exc


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_healthy(stack: DevStack) -> None:
    """Until `GET /health` answers 200; the server's log tail if it exits or takes too long."""
    server = stack.processes["server"]
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            if httpx.get(f"{stack.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(_POLL_SECS)
    log = stack.paths.log("server")
    raise DevError(f"the dbward server did not start on {stack.url}; {log}:\n{_tail(log)}")


def _wait_agent_ready(stack: DevStack) -> None:
    ready = stack.paths.root / "agent-ready"
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if stack.processes["agent"].poll() is not None:
            break
        if ready.exists():
            return
        time.sleep(_POLL_SECS)
    log = stack.paths.log("agent")
    raise DevError(f"the dbward agent did not become ready; {log}:\n{_tail(log)}")


def _reviewer(stack: DevStack) -> str:
    """The reviewer's token: created with the user, or kept from an earlier run, or reissued."""
    with ApiClient(stack.url, stack.admin_token) as admin:
        try:
            created = admin.create_user(REVIEWER, roles=[REVIEWER_ROLE])
            return str(created["token"])
        except ApiError as exc:
            if exc.status != 409:
                raise DevError(f"could not create the user {REVIEWER}: {exc.message}") from exc
        kept = stack.paths.reviewer_token
        if kept.exists():
            token = kept.read_text().strip()
            try:
                with ApiClient(stack.url, token) as reviewer:
                    reviewer.me()
                return token
            except ApiError:
                pass
        try:
            return str(admin.reissue_initial_token(REVIEWER)["token"])
        except (ApiError, KeyError) as exc:
            raise DevError(f"could not get a token for {REVIEWER}: {exc}") from exc


def redacted(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
