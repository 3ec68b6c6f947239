"""The configured databases, their health and their reconnection (degraded mode).

Only healthy databases are advertised in a poll, so a lost database stops receiving jobs
while the others keep working. A lost database is retried once per poll interval on a
background thread, so a slow connect never delays polling for the healthy ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from application.agent.ports import Clock, DatabaseFactory, DatabasePort
from application.agent.settings import DatabaseSettings
from application.agent.threads import spawn
from domain.agent.database_health import DatabaseHealth
from domain.agent.errors import DatabaseAuthError, DatabaseError
from domain.shared.errors import DbwardError
from domain.shared.scopes import Scope

log = logging.getLogger("dbward.agent.databases")

#: A reconnect attempt must not hang for long; the next poll interval tries again.
RECONNECT_TIMEOUT_SECS = 5.0


@dataclass
class _Entry:
    settings: DatabaseSettings
    port: DatabasePort
    health: DatabaseHealth
    reconnecting: bool = False


class DatabaseRegistry:
    def __init__(
        self,
        databases: Sequence[DatabaseSettings],
        factory: DatabaseFactory,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Scope, _Entry] = {
            db.scope: _Entry(settings=db, port=factory(db.url), health=DatabaseHealth(db.scope))
            for db in databases
        }
        self._fatal: DbwardError | None = None
        #: Set whenever a database goes down or comes back, so a held poll can be redone
        #: with the new set of scopes.
        self.changed = threading.Event()

    # --- queries -------------------------------------------------------------------

    @property
    def scopes(self) -> tuple[Scope, ...]:
        return tuple(self._entries)

    def healthy_scopes(self) -> tuple[Scope, ...]:
        with self._lock:
            return tuple(scope for scope, entry in self._entries.items() if entry.health.is_up)

    def port_for(self, scope: Scope) -> DatabasePort | None:
        """The database for `scope` if it is configured and currently up."""
        with self._lock:
            entry = self._entries.get(scope)
            if entry is None or not entry.health.is_up:
                return None
            return entry.port

    def is_configured(self, scope: Scope) -> bool:
        return scope in self._entries

    def dialect(self, scope: Scope) -> str:
        return self._entries[scope].settings.dialect

    def health(self, scope: Scope) -> DatabaseHealth:
        with self._lock:
            entry = self._entries[scope]
            return DatabaseHealth(**vars(entry.health))

    @property
    def fatal_error(self) -> DbwardError | None:
        """A hard error found while reconnecting (wrong password): the agent must exit."""
        return self._fatal

    # --- startup -------------------------------------------------------------------

    def connect(self, scope: Scope, timeout_secs: float) -> None:
        """Connect once; raises the adapter's error. Marks the database up on success."""
        entry = self._entries[scope]
        entry.port.connect(timeout_secs)
        self._mark_up(scope)

    def mark_down(self, scope: Scope, reason: str) -> None:
        with self._lock:
            entry = self._entries[scope]
            newly = entry.health.mark_down(reason, self._clock.monotonic())
            entry.health.record_attempt(self._clock.monotonic())
        if newly:
            self.changed.set()
            log.warning(
                "database %s is unavailable, its jobs are paused (degraded mode): %s",
                scope,
                reason,
            )

    # --- runtime -------------------------------------------------------------------

    def report_success(self, scope: Scope) -> None:
        self._mark_up(scope)

    def report_error(self, scope: Scope, error: DatabaseError) -> None:
        """A job failed on `scope`; a lost connection takes the database out of service."""
        if error.connectivity and scope in self._entries:
            self.mark_down(scope, str(error))

    def start_due_reconnects(self, interval_secs: float) -> list[Scope]:
        """Start a background reconnect for each lost database whose interval has passed."""
        now = self._clock.monotonic()
        started: list[Scope] = []
        with self._lock:
            for scope, entry in self._entries.items():
                if entry.reconnecting or not entry.health.reconnect_due(now, interval_secs):
                    continue
                entry.reconnecting = True
                entry.health.record_attempt(now)
                started.append(scope)
        for scope in started:
            spawn(f"reconnect-{scope}", partial(self._reconnect, scope))
        return started

    def run_reconnects(self, interval_secs: float, stop: threading.Event) -> threading.Thread:
        """Retry lost databases once per poll interval on a thread of its own.

        Independent of the poll loop, so a long-poll held for 20 s never delays a retry.
        """

        def loop() -> None:
            while not self._clock.wait(stop, interval_secs):
                self.start_due_reconnects(interval_secs)

        return spawn("reconnects", loop)

    def _reconnect(self, scope: Scope) -> None:
        entry = self._entries[scope]
        try:
            entry.port.connect(RECONNECT_TIMEOUT_SECS)
        except DatabaseAuthError as exc:
            log.error("database %s rejected the agent's credentials: %s", scope, exc)
            self._fatal = exc
        except Exception as exc:
            with self._lock:
                entry.health.record_failed_attempt(str(exc))
            log.debug("database %s still unavailable: %s", scope, exc)
        else:
            self._mark_up(scope)
        finally:
            with self._lock:
                entry.reconnecting = False

    def _mark_up(self, scope: Scope) -> None:
        with self._lock:
            recovered = self._entries[scope].health.mark_up()
        if recovered:
            self.changed.set()
            log.info("database %s is back, resuming its jobs", scope)

    def close(self) -> None:
        for entry in self._entries.values():
            try:
                entry.port.close()
            except Exception:
                log.debug("closing %s failed", entry.settings.scope, exc_info=True)
