"""In-memory probes: remember every change so tests can assert transitions."""

from __future__ import annotations

import threading


class FakeProbes:
    def __init__(self, *, fail_alive: bool = False) -> None:
        self._lock = threading.Lock()
        self.alive_marks = 0
        self.alive = False
        self.ready = False
        self.ready_history: list[bool] = []
        self.cleared = False
        self.fail_alive = fail_alive

    def mark_alive(self) -> None:
        if self.fail_alive:
            raise PermissionError("read-only file system")
        with self._lock:
            self.alive = True
            self.alive_marks += 1

    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self.ready = ready
            self.ready_history.append(ready)

    def clear(self) -> None:
        with self._lock:
            self.alive = False
            self.ready = False
            self.cleared = True
