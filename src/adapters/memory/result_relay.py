"""The result relay in process memory: enough for one server, lost on restart."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["InMemoryResultRelay"]


class InMemoryResultRelay:
    """Implements `application.server.ports.result_relay.ResultRelay` in a bounded map.

    Bounded (`max_slots`, oldest evicted first) and short-lived (`ttl_secs`), so results
    nobody reads cannot grow the server's memory. Thread-safe: the agent protocol puts
    from one worker thread while a client's request reads from another.
    """

    def __init__(
        self,
        max_slots: int = 10_000,
        ttl_secs: float = 600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max(1, max_slots)
        self._ttl = ttl_secs
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._slots: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def put(self, execution_id: str, result_data: str) -> None:
        with self._lock:
            self._slots[execution_id] = (self._monotonic() + self._ttl, result_data)
            self._slots.move_to_end(execution_id)
            while len(self._slots) > self._max:
                self._slots.popitem(last=False)

    def get(self, execution_id: str) -> str | None:
        with self._lock:
            slot = self._slots.get(execution_id)
            if slot is None:
                return None
            expires_at, result_data = slot
            if expires_at < self._monotonic():
                del self._slots[execution_id]
                return None
            return result_data
