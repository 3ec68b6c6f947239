"""Shared builders for unit tests: settings, a wired agent over fakes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from application.agent.database_registry import DatabaseRegistry
from application.agent.metrics import NO_AGENT_METRICS, AgentMetrics
from application.agent.runner import Agent, AgentPorts
from application.agent.settings import (
    AgentSettings,
    DatabaseSettings,
    SchemaSyncSettings,
    ServerConnectionSettings,
)
from domain.shared.scopes import Scope
from tests.fakes.clock import FixedRandom, RealClock
from tests.fakes.database import FakeDatabase, FakeDatabaseFactory
from tests.fakes.probes import FakeProbes
from tests.fakes.server import FakeServer

APP_PROD = Scope("app", "production")
APP_STAGING = Scope("app", "staging")
PG_URL = "postgres://agent:secret@db.internal:5432/app"
MY_URL = "mysql://agent:secret@db.internal:3306/app"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.005)
    return True


def make_settings(**overrides: Any) -> AgentSettings:
    """Fast settings for threaded tests: short intervals, one database unless told."""
    base = AgentSettings(
        server=ServerConnectionSettings(url="http://127.0.0.1:3000", agent_token="dbw_" + "0" * 32),
        databases=(DatabaseSettings(APP_PROD, PG_URL),),
        agent_id="test-agent",
        poll_interval_ms=20,
        poll_wait_ms=0,
        heartbeat_interval_ms=20,
        lease_duration_secs=300,
        drain_timeout_secs=5,
        max_concurrent_tasks=2,
        startup_retry_initial_ms=10,
        startup_retry_max_ms=40,
        startup_max_wait_secs=5,
        schema_sync=SchemaSyncSettings(enabled=False),
    )
    return replace(base, **overrides)


@dataclass
class Harness:
    """An Agent wired to fakes, running on a background thread."""

    agent: Agent
    server: FakeServer
    databases: FakeDatabaseFactory
    probes: FakeProbes
    thread: threading.Thread | None = None
    exit_code: int | None = None

    def db(self, url: str = PG_URL) -> FakeDatabase:
        return self.databases(url)

    def start(self) -> Harness:
        def run() -> None:
            self.exit_code = self.agent.run()

        self.thread = threading.Thread(target=run, name="agent-under-test", daemon=True)
        self.thread.start()
        return self

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not exit in time"
        return self.exit_code

    def stop(self) -> int | None:
        self.agent.request_shutdown()
        return self.wait_exit()


def build_harness(
    settings: AgentSettings | None = None,
    *,
    databases: dict[str, FakeDatabase] | None = None,
    probes: FakeProbes | None = None,
    server: FakeServer | None = None,
    metrics: AgentMetrics = NO_AGENT_METRICS,
    **server_kwargs: Any,
) -> Harness:
    """Wire an Agent to fakes. `databases` pre-seeds the fake database for given URLs;
    `probes` and `server` replace the default fakes (e.g. with scripted subclasses)."""
    settings = settings or make_settings()
    clock = RealClock()
    server = server or FakeServer(clock, **server_kwargs)
    factory = FakeDatabaseFactory()
    factory.databases.update(databases or {})
    probes = probes or FakeProbes()
    registry = DatabaseRegistry(settings.databases, factory, clock)
    ports = AgentPorts(
        server=server,
        verifier=Ed25519Verifier(),
        probes=probes,
        clock=clock,
        random=FixedRandom(0.01),
        metrics=metrics,
    )
    agent = Agent(settings, ports, registry, agent_build="test-build")
    return Harness(agent=agent, server=server, databases=factory, probes=probes)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = build_harness()
    yield h
    if h.thread is not None and h.thread.is_alive():
        h.agent.request_shutdown()
        h.agent.request_shutdown()
        h.thread.join(10)
