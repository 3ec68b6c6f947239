"""Retries of one call for the agent: tenacity, driven by the domain's backoff and the clock.

Every agent loop that tries the same call again (result submission, the startup stages)
gets its `tenacity.Retrying` here, so the retry mechanics live in one place:

- `wait` is the domain's backoff policy (`domain.shared.backoff`), which stays pure;
- `sleep` is the injected clock's interruptible wait on an abort event, so a shutdown
  signal ends a retry mid-wait (`RetryAborted`) and unit tests run on fake time;
- `stop` reads the deadline on the injected clock, never the real one.

What is worth retrying, and what is logged, stays with each caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception

from application.agent.ports import Clock


class BackoffPolicy(Protocol):
    """A delay that depends on the attempt number only (`ExponentialBackoff`)."""

    def delay(self, attempt: int) -> float:
        """Delay after the `attempt`-th failure (1-based)."""
        ...


@dataclass(frozen=True)
class Failure:
    """One failed attempt that is worth retrying, as the caller's log hooks see it."""

    #: 1-based: the first call is attempt 1.
    attempt: int
    error: BaseException


class RetryAborted(Exception):
    """The abort event was set while waiting for the next attempt."""


class DeadlinePassed(RetryError):
    """The deadline ended the retries; the last attempt failed with `last_error`."""

    @property
    def attempts(self) -> int:
        return self.last_attempt.attempt_number

    @property
    def last_error(self) -> BaseException:
        error = self.last_attempt.exception()
        assert error is not None, "only failed attempts are retried"
        return error


def backoff_retrying(
    backoff: BackoffPolicy,
    *,
    clock: Clock,
    abort: threading.Event,
    retryable: Callable[[BaseException], bool],
    deadline: float | None = None,
    last_try_at_deadline: bool = False,
    after_failure: Callable[[Failure], None] | None = None,
    before_wait: Callable[[Failure, float], None] | None = None,
) -> Retrying:
    """A `Retrying` that calls again after each error `retryable` accepts.

    Any other error, and any result, comes back from the first call that has it. The wait
    after the n-th failure is `backoff.delay(n)`, spent in `clock.wait(abort, …)`;
    `RetryAborted` is raised if `abort` is set meanwhile. `abort` is read only by the
    waits: the first attempt is always made, and a caller that must not start one after
    a shutdown checks for it in the call itself.

    `deadline` is on `clock.monotonic()`'s scale; None retries for ever. By default a
    retry whose wait would end past the deadline is not made. With `last_try_at_deadline`
    the last wait is cut short to end at the deadline and one more attempt is made there;
    retries stop once the clock reads the deadline. Either way the retries end with
    `DeadlinePassed`.

    `after_failure` sees every retryable failure, before the deadline is checked;
    `before_wait` sees those that will be retried, with the wait about to start.
    """

    def wait(state: RetryCallState) -> float:
        delay = backoff.delay(state.attempt_number)
        if deadline is not None and last_try_at_deadline:
            delay = min(delay, max(deadline - clock.monotonic(), 0.0))
        return delay

    def stop(state: RetryCallState) -> bool:
        if deadline is None:
            return False
        now = clock.monotonic()
        if last_try_at_deadline:
            return now >= deadline
        return now + backoff.delay(state.attempt_number) > deadline

    def sleep(seconds: float) -> None:
        if clock.wait(abort, seconds):
            raise RetryAborted

    def after(state: RetryCallState) -> None:
        if after_failure is not None:
            after_failure(_failure(state))

    def before_sleep(state: RetryCallState) -> None:
        if before_wait is not None:
            assert state.next_action is not None, "tenacity decides the wait before this hook"
            before_wait(_failure(state), state.next_action.sleep)

    return Retrying(
        retry=retry_if_exception(retryable),
        wait=wait,
        stop=stop,
        sleep=sleep,
        after=after,
        before_sleep=before_sleep,
        retry_error_cls=DeadlinePassed,
    )


def _failure(state: RetryCallState) -> Failure:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    assert error is not None, "only failed attempts are retried"
    return Failure(attempt=state.attempt_number, error=error)
