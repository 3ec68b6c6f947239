"""Clocks for tests: a fake one that jumps instead of sleeping, and the real one."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class FakeClock:
    """Time moves only when someone waits: `wait` advances it by the timeout at once.

    Every wait is recorded in `waits`, so tests can assert backoff sequences exactly.
    Meant for single-threaded, step-by-step tests; threaded tests use `RealClock`.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self.waits: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(timeout_secs)
        self.advance(max(timeout_secs, 0.0))
        return event.is_set()


class RealClock:
    """The system clock, for tests whose services run on real threads."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        return event.wait(max(timeout_secs, 0.0))


class FixedRandom:
    """`uniform(low, high)` returns the top of the range: the worst case, predictable."""

    def __init__(self, fraction: float = 1.0) -> None:
        self.fraction = fraction
        self.calls: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.calls.append((low, high))
        return low + (high - low) * self.fraction
