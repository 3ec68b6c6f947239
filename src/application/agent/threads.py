"""Small threading helpers shared by the services.

Work runs on daemon threads so that a forced exit is never held hostage by a statement the
database refuses to stop; the drain logic, not interpreter shutdown, decides when to wait.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

#: How often an interruptible call checks its stop event.
_CHECK_SECS = 0.05


class Interrupted(Exception):
    """The stop event fired before the call finished; its result, if any, is dropped."""


def spawn(name: str, target: Callable[[], None]) -> threading.Thread:
    """Start `target` on a daemon thread that inherits the caller's context variables, so
    a job's heartbeats log with the job's ids (`application.log_context`)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name=name, daemon=True)
    thread.start()
    return thread


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def call_interruptibly(
    name: str,
    fn: Callable[[], T],
    stop: threading.Event | Sequence[threading.Event],
    *,
    timeout_secs: float | None = None,
) -> T:
    """Run a blocking call (a held long-poll, a connect) so a shutdown signal need not wait.

    The call runs on its own daemon thread; if any `stop` event fires first, or the
    timeout passes, `Interrupted` is raised and the call is abandoned (its answer is
    discarded when it eventually arrives).
    """
    stops = (stop,) if isinstance(stop, threading.Event) else tuple(stop)
    started = time.monotonic()
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = fn()
        except BaseException as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    spawn(name, run)
    while not outcome.done.wait(_CHECK_SECS):
        if any(event.is_set() for event in stops):
            raise Interrupted(name)
        if timeout_secs is not None and time.monotonic() - started > timeout_secs:
            raise Interrupted(f"{name} timed out")
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]
