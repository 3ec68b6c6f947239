"""Per-database health, the heart of degraded mode (docs/agent.md §5 improvement 2).

A lost database leaves the advertised scopes until it reconnects; the others keep
working. Reconnects are attempted once per poll interval. Pure: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from domain.shared.scopes import Scope


class DatabaseState(Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


@dataclass
class DatabaseHealth:
    scope: Scope
    state: DatabaseState = DatabaseState.CONNECTING
    last_error: str | None = None
    down_since: float | None = None
    last_attempt_at: float | None = None
    failed_attempts: int = 0

    @property
    def is_up(self) -> bool:
        return self.state is DatabaseState.UP

    def mark_up(self) -> bool:
        """Record a working connection; True when this is a recovery from DOWN."""
        recovered = self.state is DatabaseState.DOWN
        self.state = DatabaseState.UP
        self.last_error = None
        self.down_since = None
        self.failed_attempts = 0
        return recovered

    def mark_down(self, reason: str, now: float) -> bool:
        """Record a lost connection; True when this is a new outage."""
        newly_down = self.state is not DatabaseState.DOWN
        if newly_down:
            self.down_since = now
            self.failed_attempts = 0
        self.state = DatabaseState.DOWN
        self.last_error = reason
        return newly_down

    def record_attempt(self, now: float) -> None:
        self.last_attempt_at = now

    def record_failed_attempt(self, reason: str) -> None:
        self.failed_attempts += 1
        self.last_error = reason

    def reconnect_due(self, now: float, interval_secs: float) -> bool:
        """A DOWN database is retried at most once per poll interval."""
        if self.state is not DatabaseState.DOWN:
            return False
        return self.last_attempt_at is None or now - self.last_attempt_at >= interval_secs
