"""`DispatchNotifier` on asyncio: held long-polls cost an `asyncio.Event`, not a thread.

A waiter is armed on the event loop before its owner reads the store; `notify` may come
from any thread (the sync use cases run in the thread pool, the sweeps in theirs) and
hands the wake-up to the waiter's loop with `call_soon_threadsafe`, so nothing is ever
set from the wrong thread and nothing blocks the notifier's caller. A notification may
name the request it dispatched; each waiter collects the names until its next `wait`
(`named_jobs`), and forgets them all once a notification names none.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from application.server.ports.services import NotificationWaiter

if TYPE_CHECKING:
    from application.server.ports.work.requests import RequestRecord

__all__ = ["AsyncioNotifier"]

#: Named jobs kept per waiter between two waits; past this it looks in the store instead.
_MAX_NAMED_JOBS = 64


class _Waiter:
    def __init__(self, owner: AsyncioNotifier, topics: tuple[str, ...]) -> None:
        self._owner = owner
        self.topics = topics
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self._closed = False
        #: Collected on the loop by `fire`; None once a notification named no job.
        self._named: list[RequestRecord] | None = []
        self._taken: tuple[RequestRecord, ...] | None = ()

    def fire(self, job: RequestRecord | None) -> None:
        """On the waiter's loop: one notification."""
        if job is None or self._named is None or len(self._named) >= _MAX_NAMED_JOBS:
            self._named = None
        else:
            self._named.append(job)
        self.event.set()

    async def wait(self, timeout_secs: float) -> bool:
        if not self.event.is_set() and timeout_secs > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout_secs)
        fired = self.event.is_set()
        self.event.clear()
        named, self._named = self._named, []
        self._taken = None if named is None else tuple(named)
        return fired

    def named_jobs(self) -> tuple[RequestRecord, ...] | None:
        return self._taken

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner._remove(self)

    def __enter__(self) -> NotificationWaiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncioNotifier:
    """Implements `application.server.ports.services.DispatchNotifier` for one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_topic: dict[str, set[_Waiter]] = {}

    def arm(self, topics: Iterable[str]) -> NotificationWaiter:
        """Must be called from a coroutine (the waiter belongs to the running loop)."""
        waiter = _Waiter(self, tuple(dict.fromkeys(topics)))
        with self._lock:
            for topic in waiter.topics:
                self._by_topic.setdefault(topic, set()).add(waiter)
        return waiter

    def notify(self, topic: str, job: RequestRecord | None = None) -> None:
        with self._lock:
            waiters = tuple(self._by_topic.get(topic, ()))
        for waiter in waiters:
            _wake(waiter, job)

    def notify_all(self) -> None:
        with self._lock:
            waiters = {w for group in self._by_topic.values() for w in group}
        for waiter in waiters:
            _wake(waiter)

    @property
    def waiting(self) -> int:
        """How many waiters are armed (for tests and metrics)."""
        with self._lock:
            return len({w for group in self._by_topic.values() for w in group})

    def _remove(self, waiter: _Waiter) -> None:
        with self._lock:
            for topic in waiter.topics:
                group = self._by_topic.get(topic)
                if group is None:
                    continue
                group.discard(waiter)
                if not group:
                    del self._by_topic[topic]


def _wake(waiter: _Waiter, job: RequestRecord | None = None) -> None:
    # The loop may be gone (a server shutting down): a lost hint is harmless.
    with contextlib.suppress(RuntimeError):
        waiter.loop.call_soon_threadsafe(waiter.fire, job)
