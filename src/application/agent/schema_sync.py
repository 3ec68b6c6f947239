"""Schema sync: tables, columns, row estimates and keys for the server's risk scoring.

Runs at startup (in the background, so polling starts at once), every `interval_secs`
(with jitter, so a fleet restarted together does not sync in lockstep), and right after a
successful migration of one database. Failures are reported, never fatal.
"""

from __future__ import annotations

import logging
import threading

from application.agent.database_registry import DatabaseRegistry
from application.agent.ports import Clock, Random, ServerPort
from application.agent.settings import SchemaSyncSettings
from application.agent.threads import spawn
from domain.agent.errors import DatabaseError, ServerError, ServerNotFound
from domain.shared.errors import DbwardError
from domain.shared.jobs import SchemaReport
from domain.shared.scopes import Scope

log = logging.getLogger("dbward.agent.schema")

#: Share of the interval added at random to each wait.
INTERVAL_JITTER = 0.1


class SchemaSync:
    def __init__(
        self,
        server: ServerPort,
        registry: DatabaseRegistry,
        clock: Clock,
        random: Random,
        settings: SchemaSyncSettings,
        stop: threading.Event,
    ) -> None:
        self._server = server
        self._registry = registry
        self._clock = clock
        self._random = random
        self._settings = settings
        self._stop = stop
        self._lock = threading.Lock()
        self._unsupported_logged = False
        self.reports_sent = 0

    def start_background(self) -> threading.Thread | None:
        """Startup sync and the periodic loop, as configured; None when neither is on."""
        if not self._settings.enabled:
            return None
        if not self._settings.sync_on_startup and self._settings.interval_secs <= 0:
            return None
        return spawn("schema-sync", self._run_background)

    def _run_background(self) -> None:
        if self._settings.sync_on_startup:
            self.sync_all()
        interval = self._settings.interval_secs
        if interval <= 0:
            return
        while True:
            wait = interval + self._random.uniform(0.0, interval * INTERVAL_JITTER)
            if self._clock.wait(self._stop, wait):
                return
            try:
                self.sync_all()
            except Exception:
                log.exception("schema sync pass failed; the next one runs as scheduled")

    def sync_all(self) -> None:
        for scope in self._registry.healthy_scopes():
            if self._stop.is_set():
                return
            self.sync_scope(scope)

    def sync_scope(self, scope: Scope) -> bool:
        """Collect and send one database's schema; True if the server took a report."""
        port = self._registry.port_for(scope)
        if port is None:
            log.info("schema sync of %s skipped: the database is unavailable", scope)
            return False
        dialect = self._registry.dialect(scope)
        with self._lock:  # one collection at a time keeps the load on databases small
            try:
                snapshot = port.collect_schema()
                report = SchemaReport(
                    scope=scope, dialect=dialect, status="ready", snapshot=snapshot
                )
            except DatabaseError as exc:
                self._registry.report_error(scope, exc)
                log.warning("schema collection of %s failed: %s", scope, exc)
                report = SchemaReport(
                    scope=scope, dialect=dialect, status="failed", error_message=str(exc)
                )
            except Exception as exc:
                log.exception("schema collection of %s failed", scope)
                report = SchemaReport(
                    scope=scope,
                    dialect=dialect,
                    status="failed",
                    error_message=f"agent error: {type(exc).__name__}: {exc}",
                )
        return self._send(report)

    def _send(self, report: SchemaReport) -> bool:
        try:
            self._server.submit_schema(report)
        except (ServerNotFound, ServerError) as exc:
            if isinstance(exc, ServerNotFound) or exc.status == 501:
                if not self._unsupported_logged:
                    log.info("schema sync is not supported by this server")
                    self._unsupported_logged = True
                return False
            log.warning("schema sync of %s refused: %s", report.scope, exc)
            return False
        except DbwardError as exc:
            log.warning("schema sync of %s failed: %s", report.scope, exc)
            return False
        self.reports_sent += 1
        log.info("schema of %s synced (%s)", report.scope, report.status)
        return True
