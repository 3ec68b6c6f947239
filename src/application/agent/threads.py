"""Small threading helpers shared by the services.

Work runs on daemon threads so that a forced exit is never held hostage by a statement the
database refuses to stop; the drain logic, not interpreter shutdown, decides when to wait.

Short-lived work (a job, its heartbeats, one poll) goes through `start_task`, which hands
it to a thread left idle by earlier work instead of starting a new one: starting a thread
cost about a tenth of the agent's CPU per job (docs/performance.md, "Agent"). There are
never more threads than work running at once, as with a thread per task, so no task waits
for another to end (a job and its heartbeats run side by side); a thread idle for
`IDLE_THREAD_SECS` ends.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

#: How often an interruptible call checks its stop event.
_CHECK_SECS = 0.05
#: How long a thread left without work waits for more before it ends.
IDLE_THREAD_SECS = 30.0
#: The name of a thread between two tasks.
_IDLE_THREAD_NAME = "dbward-idle"


class Interrupted(Exception):
    """The stop event fired before the call finished; its result, if any, is dropped."""


def spawn(name: str, target: Callable[[], None]) -> threading.Thread:
    """Start `target` on a daemon thread that inherits the caller's context variables, so
    a job's heartbeats log with the job's ids (`application.log_context`)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name=name, daemon=True)
    thread.start()
    return thread


class BackgroundTask:
    """One piece of work started by `start_task`: what `threading.Thread` offers to wait
    on it, without the thread itself, which goes on to other work afterwards."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name = name
        self._context = contextvars.copy_context()
        self._target = target
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the work to end; returns at once when called from the work itself."""
        if self._thread is not threading.current_thread():
            self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def run_on(self, thread: threading.Thread) -> None:
        """Called by the thread that takes the task."""
        self._thread = thread
        thread.name = self.name
        try:
            self._context.run(self._target)
        except BaseException as exc:
            # What an uncaught error in a thread of its own would do: report it, and go on.
            threading.excepthook(
                threading.ExceptHookArgs((type(exc), exc, exc.__traceback__, thread))
            )
        thread.name = _IDLE_THREAD_NAME

    def mark_done(self) -> None:
        """Called once the thread that ran the task is free for the next one."""
        self._done.set()


class _IdleThreads:
    """Threads waiting for their next task, each on its own queue, newest last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[queue.SimpleQueue[BackgroundTask]] = []

    def start(self, task: BackgroundTask) -> None:
        with self._lock:
            inbox = self._waiting.pop() if self._waiting else None
        if inbox is not None:
            inbox.put(task)
            return
        thread = threading.Thread(target=self._work, args=(task,), name=task.name, daemon=True)
        thread.start()

    def _work(self, task: BackgroundTask) -> None:
        thread = threading.current_thread()
        inbox: queue.SimpleQueue[BackgroundTask] = queue.SimpleQueue()
        while True:
            task.run_on(thread)
            with self._lock:
                self._waiting.append(inbox)
            # Only now: whoever waited for this task may start the next one on this thread.
            task.mark_done()
            del task  # an idle thread keeps nothing of its last job alive
            try:
                task = inbox.get(timeout=IDLE_THREAD_SECS)
            except queue.Empty:
                with self._lock:
                    if inbox in self._waiting:
                        self._waiting.remove(inbox)
                        return
                task = inbox.get()  # handed a task while the wait was ending


_IDLE_THREADS = _IdleThreads()


def start_task(name: str, target: Callable[[], None]) -> BackgroundTask:
    """Run `target` on a daemon thread, reusing an idle one, in a copy of the caller's
    context variables (as `spawn` does); the thread carries `name` while it runs."""
    task = BackgroundTask(name, target)
    _IDLE_THREADS.start(task)
    return task


class ScheduledCall:
    """A call `call_later` will make unless cancelled first."""

    def __init__(self, timers: _Timers, name: str, callback: Callable[[], None]) -> None:
        self._timers = timers
        self.name = name
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        """After this returns the call is not started any more (one already started runs
        on, as with `threading.Timer.cancel`)."""
        self._timers.cancel(self)


class _Timers:
    """One thread for every pending `call_later`, instead of a `threading.Timer` thread
    each: a statement's deadline was a thread started per job (docs/performance.md,
    "Agent"). Calls that are due run through `start_task`, each on a thread of its own,
    so one that blocks delays no other."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int, ScheduledCall]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def call_later(
        self, name: str, delay_secs: float, callback: Callable[[], None]
    ) -> ScheduledCall:
        call = ScheduledCall(self, name, callback)
        due = time.monotonic() + max(delay_secs, 0.0)
        with self._changed:
            heapq.heappush(self._due, (due, next(self._order), call))
            if self._thread is None:
                self._thread = spawn("dbward-timers", self._run)
            elif self._due[0][2] is call:
                self._changed.notify()  # earlier than what the thread sleeps towards
        return call

    def cancel(self, call: ScheduledCall) -> None:
        # Dropped from the heap when it comes to the top; its callback goes now.
        with self._changed:
            call.callback = None

    def _run(self) -> None:
        with self._changed:
            while True:
                while self._due and self._due[0][2].callback is None:
                    heapq.heappop(self._due)
                if not self._due:
                    self._changed.wait()
                    continue
                due, _, call = self._due[0]
                now = time.monotonic()
                if now < due:
                    self._changed.wait(due - now)
                    continue
                heapq.heappop(self._due)
                callback, call.callback = call.callback, None
                if callback is not None:
                    try:
                        start_task(call.name, callback)
                    except Exception as exc:
                        # No thread to be had (a process at its limit): reported, and the
                        # other deadlines are still kept.
                        threading.excepthook(
                            threading.ExceptHookArgs(
                                (type(exc), exc, exc.__traceback__, threading.current_thread())
                            )
                        )


_TIMERS = _Timers()


def call_later(name: str, delay_secs: float, callback: Callable[[], None]) -> ScheduledCall:
    """`threading.Timer(delay_secs, callback)` without a thread of its own while it waits:
    the callback runs on a `start_task` thread named `name`, unless cancelled first."""
    return _TIMERS.call_later(name, delay_secs, callback)


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

    start_task(name, run)
    while not outcome.done.wait(_CHECK_SECS):
        if any(event.is_set() for event in stops):
            raise Interrupted(name)
        if timeout_secs is not None and time.monotonic() - started > timeout_secs:
            raise Interrupted(f"{name} timed out")
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]
