"""The real clock. Services never call `time.sleep`: they wait on the shutdown event here,
so a signal interrupts every wait, and tests swap in a fake clock that never sleeps."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class SystemClock:
    """Implements `application.agent.ports.Clock`."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout_secs: float) -> bool:
        return event.wait(max(timeout_secs, 0.0))
