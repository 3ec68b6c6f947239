"""How the integration suite finds its databases: variables, then Docker, then skip or fail."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from tests.integration.databases import Engine, database_url, docker_reachable

VARIABLE = "DBWARD_TEST_FAKE_URL"
CONTAINER_URL = "fake://container/test"


class FakeServers:
    """Which URLs accept connections, and a container starter that records its life."""

    def __init__(self, *, reachable: set[str], docker: bool, start_fails: bool = False) -> None:
        self.reachable = reachable
        self.docker = docker
        self.start_fails = start_fails
        self.docker_probes = 0
        self.events: list[str] = []

    def connect_error(self, url: str) -> str | None:
        return None if url in self.reachable else "connection refused"

    def is_docker_reachable(self) -> bool:
        self.docker_probes += 1
        return self.docker

    @contextmanager
    def start(self, engine: Engine) -> Iterator[str]:
        if self.start_fails:
            raise RuntimeError("image not found")
        self.events.append(f"start {engine.image}")
        yield CONTAINER_URL
        self.events.append(f"stop {engine.image}")

    def engine(self) -> Engine:
        return Engine("FakeDB", VARIABLE, "fakedb:1", self.connect_error, _never_built)

    def url(self, environ: dict[str, str]) -> AbstractContextManager[str]:
        return database_url(
            self.engine(),
            environ=environ,
            is_docker_reachable=self.is_docker_reachable,
            start=self.start,
        )


def _open(url: AbstractContextManager[str]) -> str:
    """Enter the fixture's context and leave it at once, like a session with no tests."""
    with url as opened:
        return opened


def _never_built(image: str) -> Any:
    raise AssertionError(f"the real container for {image} must not be built here")


def test_the_variable_wins_and_docker_is_not_even_probed() -> None:
    servers = FakeServers(reachable={"fake://local/test"}, docker=True)
    with servers.url({VARIABLE: "fake://local/test"}) as url:
        assert url == "fake://local/test"
    assert servers.docker_probes == 0
    assert servers.events == []


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_an_unreachable_variable_url_skips_or_fails_by_ci(ci: str, outcome: type) -> None:
    servers = FakeServers(reachable=set(), docker=True)
    with pytest.raises(outcome, match="FakeDB at fake://down/test is not reachable"):
        _open(servers.url({VARIABLE: "fake://down/test", "CI": ci}))
    assert servers.events == []


@pytest.mark.parametrize("environ", [{}, {VARIABLE: ""}])
def test_without_the_variable_docker_runs_a_container_for_the_session(
    environ: dict[str, str],
) -> None:
    servers = FakeServers(reachable=set(), docker=True)
    with servers.url(environ) as url:
        assert url == CONTAINER_URL
        assert servers.events == ["start fakedb:1"]
    assert servers.events == ["start fakedb:1", "stop fakedb:1"]


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("", pytest.skip.Exception), ("1", pytest.fail.Exception), ("TRUE", pytest.fail.Exception)],
)
def test_neither_variable_nor_docker_skips_or_fails_by_ci(ci: str, outcome: type) -> None:
    servers = FakeServers(reachable=set(), docker=False)
    with pytest.raises(outcome, match=f"{VARIABLE} is not set and no Docker engine"):
        _open(servers.url({"CI": ci}))
    assert servers.docker_probes == 1
    assert servers.events == []


def test_ci_failure_says_why_it_is_not_a_skip() -> None:
    servers = FakeServers(reachable=set(), docker=False)
    with pytest.raises(pytest.fail.Exception, match="CI=true: a missing database fails"):
        _open(servers.url({"CI": "true"}))


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_a_container_that_cannot_start_skips_or_fails_by_ci(ci: str, outcome: type) -> None:
    servers = FakeServers(reachable=set(), docker=True, start_fails=True)
    with pytest.raises(outcome, match=r"could not start fakedb:1 .*: image not found"):
        _open(servers.url({"CI": ci}))


@contextmanager
def _silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never answers, like a black-holed engine."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_docker_probe_answers_no_quickly_when_nothing_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from testcontainers.core.config import testcontainers_config

    if testcontainers_config.tc_properties_get_tc_host():
        pytest.skip("~/.testcontainers.properties names a Docker host; it takes precedence")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    assert docker_reachable(timeout_secs=0.5) is False
    with _silent_listener() as port:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
        started = time.monotonic()
        assert docker_reachable(timeout_secs=0.5) is False
        assert time.monotonic() - started < 5
