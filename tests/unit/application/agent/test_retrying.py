"""`application.agent.retrying`: tenacity on the domain's backoff and the injected clock.

Everything runs on a `FakeClock`: waits are recorded instead of slept, and the deadline is
read on the fake clock, so each schedule is asserted exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from tenacity import Retrying

from application.agent.retrying import (
    DeadlinePassed,
    Failure,
    RetryAborted,
    backoff_retrying,
)
from domain.shared.backoff import ExponentialBackoff
from tests.fakes.clock import FakeClock

BACKOFF = ExponentialBackoff(initial_secs=1.0, max_secs=15.0)


class Transient(Exception):
    pass


class Hard(Exception):
    pass


def transient_only(error: BaseException) -> bool:
    return isinstance(error, Transient)


class Flaky:
    """Fails with `errors` in order, then returns `value`; counts its calls."""

    def __init__(self, *errors: BaseException, value: str = "done") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def failing_for_ever() -> Flaky:
    return Flaky(*(Transient(f"failure {n}") for n in range(1, 1000)))


def retrying_on(
    clock: FakeClock,
    abort: threading.Event | None = None,
    *,
    deadline: float | None = None,
    last_try_at_deadline: bool = False,
    after_failure: Callable[[Failure], None] | None = None,
    before_wait: Callable[[Failure, float], None] | None = None,
) -> Retrying:
    """The agent's retrying with the brief's backoff, retrying `Transient` errors only."""
    return backoff_retrying(
        BACKOFF,
        clock=clock,
        abort=abort or threading.Event(),
        retryable=transient_only,
        deadline=deadline,
        last_try_at_deadline=last_try_at_deadline,
        after_failure=after_failure,
        before_wait=before_wait,
    )


# --- waits and sleeps ---------------------------------------------------------------


def test_the_waits_are_the_backoff_policy_and_are_spent_on_the_injected_clock() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    call = Flaky(*(Transient("down") for _ in range(6)))
    assert retrying_on(clock)(call) == "done"
    assert call.calls == 7
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert clock.monotonic() == start + sum(clock.waits)


def test_a_first_success_neither_waits_nor_retries() -> None:
    clock = FakeClock()
    call = Flaky()
    assert retrying_on(clock)(call) == "done"
    assert call.calls == 1
    assert clock.waits == []


def test_arguments_reach_the_call() -> None:
    clock = FakeClock()
    assert retrying_on(clock)(lambda a, b: f"{a}-{b}", "x", b="y") == "x-y"


def test_another_policy_gives_other_waits() -> None:
    clock = FakeClock()
    retrying = backoff_retrying(
        ExponentialBackoff(initial_secs=0.5, max_secs=3.0),
        clock=clock,
        abort=threading.Event(),
        retryable=transient_only,
    )
    retrying(Flaky(*(Transient("down") for _ in range(5))))
    assert clock.waits == [0.5, 1.0, 2.0, 3.0, 3.0]


# --- what is retried ------------------------------------------------------------------


def test_an_error_that_is_not_retryable_passes_through_at_once() -> None:
    clock = FakeClock()
    call = Flaky(Hard("refused"))
    with pytest.raises(Hard, match="refused"):
        retrying_on(clock)(call)
    assert call.calls == 1
    assert clock.waits == []


def test_a_non_retryable_error_after_retries_passes_through_as_itself() -> None:
    clock = FakeClock()
    call = Flaky(Transient("down"), Transient("down"), Hard("refused"))
    with pytest.raises(Hard, match="refused"):
        retrying_on(clock)(call)
    assert call.calls == 3
    assert clock.waits == [1.0, 2.0]


# --- deadline ---------------------------------------------------------------------------


def test_the_deadline_on_the_injected_clock_stops_before_a_wait_that_would_pass_it() -> None:
    clock = FakeClock()
    call = failing_for_ever()
    with pytest.raises(DeadlinePassed) as stopped:
        retrying_on(clock, deadline=clock.monotonic() + 10)(call)
    # 1 + 2 + 4 = 7 s; the next wait (8 s) would end past the deadline.
    assert clock.waits == [1.0, 2.0, 4.0]
    assert call.calls == 4
    assert stopped.value.attempts == 4
    assert str(stopped.value.last_error) == "failure 4"


def test_the_deadline_is_read_on_the_injected_clock_not_the_real_one() -> None:
    clock = FakeClock()
    deadline = clock.monotonic() + 100
    clock.advance(100)  # fake time alone reaches the deadline
    call = failing_for_ever()
    with pytest.raises(DeadlinePassed):
        retrying_on(clock, deadline=deadline)(call)
    assert call.calls == 1
    assert clock.waits == []


def test_last_try_at_deadline_shortens_the_last_wait_and_tries_once_more() -> None:
    clock = FakeClock()
    deadline = clock.monotonic() + 10
    call = failing_for_ever()
    with pytest.raises(DeadlinePassed) as stopped:
        retrying_on(clock, deadline=deadline, last_try_at_deadline=True)(call)
    assert clock.waits == [1.0, 2.0, 4.0, 3.0]
    assert clock.monotonic() == deadline
    assert call.calls == 5
    assert stopped.value.attempts == 5


def test_without_a_deadline_it_retries_for_ever() -> None:
    clock = FakeClock()
    call = Flaky(*(Transient("down") for _ in range(100)))
    assert retrying_on(clock, last_try_at_deadline=True)(call) == "done"
    assert call.calls == 101
    assert sum(clock.waits) > 1000


# --- abort ------------------------------------------------------------------------------


class AbortingClock(FakeClock):
    """A FakeClock on which the abort event is set during the `abort_in`-th wait."""

    def __init__(self, abort: threading.Event, abort_in: int) -> None:
        super().__init__()
        self.abort = abort
        self.abort_in = abort_in

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        if len(self.waits) + 1 == self.abort_in:
            self.waits.append(timeout_secs)
            self.advance(timeout_secs / 2)
            self.abort.set()
        return super().wait(event, timeout_secs)


def test_an_abort_during_a_wait_stops_the_retries() -> None:
    abort = threading.Event()
    clock = AbortingClock(abort, abort_in=3)
    call = failing_for_ever()
    with pytest.raises(RetryAborted):
        retrying_on(clock, abort)(call)
    assert call.calls == 3
    assert clock.waits == [1.0, 2.0, 4.0]


def test_an_abort_set_beforehand_still_allows_the_first_attempt() -> None:
    abort = threading.Event()
    abort.set()
    clock = FakeClock()
    call = failing_for_ever()
    with pytest.raises(RetryAborted):
        retrying_on(clock, abort)(call)
    assert call.calls == 1
    assert clock.waits == []


def test_the_wait_is_on_the_abort_event() -> None:
    abort = threading.Event()
    seen: list[threading.Event] = []

    class SpyClock(FakeClock):
        def wait(self, event: threading.Event, timeout_secs: float) -> bool:
            seen.append(event)
            return super().wait(event, timeout_secs)

    retrying_on(SpyClock(), abort)(Flaky(Transient("down")))
    assert seen == [abort]


# --- hooks ------------------------------------------------------------------------------


Events = list[tuple[str, object]]


def recorder() -> tuple[Events, Callable[[Failure], None], Callable[[Failure, float], None]]:
    """Hooks that write what they see to one list, in order."""
    events: Events = []

    def after_failure(failure: Failure) -> None:
        events.append(("failed", (failure.attempt, str(failure.error))))

    def before_wait(failure: Failure, delay: float) -> None:
        events.append(("wait", (failure.attempt, delay)))

    return events, after_failure, before_wait


def test_hooks_see_each_failure_then_the_wait_about_to_start() -> None:
    events, after_failure, before_wait = recorder()
    clock = FakeClock()
    call = Flaky(Transient("a"), Transient("b"))
    retrying_on(clock, after_failure=after_failure, before_wait=before_wait)(call)
    assert events == [
        ("failed", (1, "a")),
        ("wait", (1, 1.0)),
        ("failed", (2, "b")),
        ("wait", (2, 2.0)),
    ]


def test_the_failure_the_deadline_stops_on_is_seen_but_no_wait_follows() -> None:
    events, after_failure, before_wait = recorder()
    clock = FakeClock()
    retrying = retrying_on(
        clock,
        deadline=clock.monotonic() + 2,
        after_failure=after_failure,
        before_wait=before_wait,
    )
    with pytest.raises(DeadlinePassed):
        retrying(failing_for_ever())
    assert events == [
        ("failed", (1, "failure 1")),
        ("wait", (1, 1.0)),
        ("failed", (2, "failure 2")),
    ]


def test_hooks_do_not_see_errors_that_are_not_retried() -> None:
    events, after_failure, before_wait = recorder()
    with pytest.raises(Hard):
        retrying_on(FakeClock(), after_failure=after_failure, before_wait=before_wait)(
            Flaky(Hard("refused"))
        )
    assert events == []
