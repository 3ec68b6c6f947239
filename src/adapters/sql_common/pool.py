"""A small pool of idle database connections, shared by the PostgreSQL and MySQL adapters.

Concurrency is already bounded by the agent (job slots, EXPLAIN slots, one schema sync),
so the pool only keeps a few idle connections warm. A connection that saw an error or a
cancel is closed, never handed out again in an unknown state.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")

DEFAULT_MAX_IDLE = 5


class ConnectionPool(Generic[C]):
    def __init__(
        self,
        open_connection: Callable[[], C],
        close_connection: Callable[[C], None],
        *,
        max_idle: int = DEFAULT_MAX_IDLE,
    ) -> None:
        self._open = open_connection
        self._close = close_connection
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[C] = []
        self._closed = False

    def acquire(self) -> C:
        """An idle connection, or a new one (which may raise the driver's connect error)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._open()

    def release(self, connection: C, *, reusable: bool) -> None:
        """Return a clean connection to the pool; close a dirty one (or one over the cap)."""
        with self._lock:
            keep = reusable and not self._closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(connection)
                return
        self.discard(connection)

    def discard(self, connection: C) -> None:
        # The connection is being thrown away: a failure to close it changes nothing.
        with contextlib.suppress(Exception):
            self._close(connection)

    def clear(self) -> None:
        """Close every idle connection (after the database was lost, or at exit)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            self.discard(connection)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.clear()

    @property
    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)
