"""`make run` waits for the server's health check before it starts the agent."""

from __future__ import annotations

import subprocess
import time
from typing import Any, cast

import httpx
import pytest

from entrypoints import dev

URL = "http://127.0.0.1:3000"


class FakeServer:
    """The server process as `_wait_healthy` sees it: running until `exit_after` polls."""

    def __init__(self, exit_after: int | None = None) -> None:
        self.exit_after = exit_after
        self.polls = 0

    def poll(self) -> int | None:
        self.polls += 1
        if self.exit_after is not None and self.polls > self.exit_after:
            return 1
        return None


def wait_healthy(server: FakeServer) -> bool:
    return dev._wait_healthy(URL, cast("subprocess.Popen[bytes]", server))


class HealthAnswers:
    """`httpx.get` answering each call from a script: a status code or an exception."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    def __call__(self, url: str, **kwargs: Any) -> httpx.Response:
        self.urls.append(url)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "HEALTH_POLL_SECS", 0.001)


def test_a_healthy_server_is_ready_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = HealthAnswers(200)
    monkeypatch.setattr(httpx, "get", answers)
    assert wait_healthy(FakeServer())
    assert answers.urls == [f"{URL}/health"]


@pytest.mark.usefixtures("fast_polls")
def test_the_server_is_asked_again_until_it_answers_200(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = HealthAnswers(httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow"), 200)
    monkeypatch.setattr(httpx, "get", answers)
    assert wait_healthy(FakeServer())
    assert len(answers.urls) == 4


@pytest.mark.usefixtures("fast_polls")
def test_a_server_that_exits_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = HealthAnswers(httpx.ConnectError("refused"))
    monkeypatch.setattr(httpx, "get", answers)
    server = FakeServer(exit_after=2)
    assert not wait_healthy(server)
    assert len(answers.urls) == 2
    assert server.polls == 3


def test_the_wait_ends_after_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = HealthAnswers(httpx.ConnectError("refused"))
    monkeypatch.setattr(httpx, "get", answers)
    monkeypatch.setattr(dev, "HEALTH_WAIT_SECS", 0.3)
    monkeypatch.setattr(dev, "HEALTH_POLL_SECS", 0.05)
    started = time.monotonic()
    assert not wait_healthy(FakeServer())
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 5
    assert 2 <= len(answers.urls) <= 7


def test_the_default_timing_is_every_tenth_of_a_second_for_30_seconds() -> None:
    assert (dev.HEALTH_POLL_SECS, dev.HEALTH_WAIT_SECS) == (0.1, 30.0)
