"""Cancellation shared between a job's worker thread and its heartbeat thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum


class CancelReason(Enum):
    SERVER_CANCELLED = "cancelled by the server"
    LEASE_LOST = "lease lost"
    SHUTDOWN = "agent shutting down"
    TIMEOUT = "statement timeout"


class CancelToken:
    """Fired from any thread; the database adapter registers how to stop its statement.

    The adapter calls `on_cancel(callback)` once the statement is running (for example
    psycopg's `cancel_safe` or a `KILL QUERY` on a fresh connection). If the token fired
    before that, the callback runs at once, so a cancel can never be missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: CancelReason | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> CancelReason | None:
        return self._reason

    @property
    def event(self) -> threading.Event:
        return self._event

    def cancel(self, reason: CancelReason) -> bool:
        """Fire the token; True if this call fired it (later calls are no-ops)."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            callbacks = list(self._callbacks)
            self._event.set()
        for callback in callbacks:
            callback()
        return True

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register a stop action; returns a function that unregisters it."""
        with self._lock:
            fired = self._reason is not None
            if not fired:
                self._callbacks.append(callback)
        if fired:
            callback()

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister
