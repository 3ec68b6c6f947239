"""The agent's lifecycle: startup, the poll loop, drain, exit code.

Exit codes: 0 after a clean drain or a signal during startup; 1 for a hard startup error,
a startup timeout, a fatal runtime condition (revoked token, rejected database
credentials) or a drain that had to cancel work (timeout or second signal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from application.agent.cancellation import CancelReason
from application.agent.claim_backoff import ClaimBackoff
from application.agent.database_registry import DatabaseRegistry
from application.agent.explain_jobs import ExplainRunner
from application.agent.job_executor import JobExecutor
from application.agent.job_tracker import JobTracker
from application.agent.metrics import NO_AGENT_METRICS, AgentMetrics
from application.agent.poll_loop import PollLoop
from application.agent.ports import Clock, ProbePort, Random, ServerPort, SignatureVerifier
from application.agent.result_submitter import ResultSubmitter
from application.agent.schema_sync import SchemaSync
from application.agent.settings import AgentSettings
from application.agent.startup import Startup, StartupStatus
from application.agent.state import Readiness, ShutdownSignals
from domain.agent.errors import AgentFatalError

log = logging.getLogger("dbward.agent")

#: After cancelling on a forced exit, how long running jobs get to report their failure.
FORCED_EXIT_REPORT_SECS = 5.0
#: How often drain re-checks the in-flight work.
DRAIN_CHECK_SECS = 0.2


@dataclass(frozen=True)
class AgentPorts:
    server: ServerPort
    verifier: SignatureVerifier
    probes: ProbePort
    clock: Clock
    random: Random
    metrics: AgentMetrics = NO_AGENT_METRICS


class Agent:
    """Wires the services together for one run; `run()` returns the process exit code."""

    def __init__(
        self,
        settings: AgentSettings,
        ports: AgentPorts,
        registry: DatabaseRegistry,
        *,
        agent_build: str,
    ) -> None:
        self.settings = settings
        self.ports = ports
        self.registry = registry
        self.signals = ShutdownSignals()
        self.tracker = JobTracker()
        self.readiness = Readiness(ports.probes)
        clock = ports.clock
        self.claim_backoff = ClaimBackoff(clock)
        self.schema_sync = SchemaSync(
            ports.server, registry, clock, ports.random, settings.schema_sync, self.signals.drain
        )
        self.explains = ExplainRunner(
            ports.server, registry, self.tracker, max_parallel=settings.max_concurrent_tasks
        )
        self.executor = JobExecutor(
            settings=settings,
            server=ports.server,
            registry=registry,
            tracker=self.tracker,
            verifier=ports.verifier,
            clock=clock,
            submitter=ResultSubmitter(ports.server, clock, self.signals.force),
            after_migration=self.schema_sync.sync_scope,
            on_finished=self.signals.wake,
            claim_backoff=self.claim_backoff,
            metrics=ports.metrics,
        )
        self.loop = PollLoop(
            settings=settings,
            server=ports.server,
            registry=registry,
            tracker=self.tracker,
            executor=self.executor,
            explains=self.explains,
            clock=clock,
            random=ports.random,
            probes=ports.probes,
            readiness=self.readiness,
            signals=self.signals,
            agent_build=agent_build,
            started_at=clock.monotonic(),
            claim_backoff=self.claim_backoff,
            metrics=ports.metrics,
        )
        self.startup = Startup(
            settings=settings,
            server=ports.server,
            registry=registry,
            verifier=ports.verifier,
            probes=ports.probes,
            clock=clock,
            signals=self.signals,
            build_first_poll=lambda scopes: self.loop.build_request(scopes, 0, 0),
        )

    def request_shutdown(self) -> None:
        """Called from a signal handler: the first call drains, the second forces."""
        self.signals.request()

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.signals.drain.set()  # stops the background loops
            try:
                self.ports.probes.clear()
            except OSError as exc:
                log.error("cannot remove the probe files: %s", exc)
            self.registry.close()
            self.ports.server.close()

    def _run(self) -> int:
        outcome = self.startup.run()
        if outcome.status is StartupStatus.SHUTDOWN:
            return 0
        if outcome.status is StartupStatus.FAILED:
            log.error("startup failed: %s", outcome.message)
            return 1
        if not self.settings.operations_configured:
            log.warning(
                "`operations` is not set: this agent accepts every standard operation, "
                "migrations included"
            )
        if outcome.first_poll is not None:
            for preflight in outcome.first_poll.preflight_jobs:
                self.explains.accept_preflight(preflight)
            if outcome.first_poll.upgrade_required:
                self.loop.upgrade_required = True
                log.error(
                    "the server requires a newer agent (minimum %s): no jobs until upgraded",
                    outcome.first_poll.min_agent_version,
                )
        if self.loop.upgrade_required:
            self.readiness.update(False, "the server requires an agent upgrade")
        elif self.registry.healthy_scopes():
            self.readiness.update(True)
        self.schema_sync.start_background()
        self.registry.run_reconnects(self.settings.poll_interval_ms / 1000, self.signals.drain)
        try:
            self._poll_until_shutdown()
        except AgentFatalError as exc:
            log.error("%s", exc)
            self.readiness.update(False, "stopping")
            self._cancel_and_wait()
            return 1
        return self.drain()

    def _poll_until_shutdown(self) -> None:
        clock = self.ports.clock
        while not self.signals.drain.is_set():
            result = self.loop.step()
            if result.delay_secs > 0 and not self.signals.drain.is_set():
                clock.wait(self.signals.wake, result.delay_secs)

    def drain(self) -> int:
        """Stop intake, wait for in-flight work up to `drain_timeout_secs`, then exit."""
        clock = self.ports.clock
        log.info(
            "draining: %d job(s) and %d explain(s) in flight, waiting up to %ds",
            self.tracker.in_flight,
            self.tracker.in_flight_explains,
            self.settings.drain_timeout_secs,
        )
        deadline = clock.monotonic() + self.settings.drain_timeout_secs
        self.readiness.update(False, "draining")
        self.loop.draining_poll()
        while not self.tracker.idle:
            if self.signals.force.is_set():
                log.error("forced shutdown: cancelling in-flight work")
                self._cancel_and_wait()
                return 1
            if clock.monotonic() >= deadline:
                log.error(
                    "drain timeout exceeded (%ds): cancelling in-flight work",
                    self.settings.drain_timeout_secs,
                )
                self._cancel_and_wait()
                return 1
            clock.wait(self.signals.force, DRAIN_CHECK_SECS)
        self.loop.draining_poll()
        log.info("agent shutdown complete")
        return 0

    def _cancel_and_wait(self) -> None:
        """Cancel running statements (never migrations) and give their results a moment."""
        self.signals.drain.set()
        cancelled = self.tracker.cancel_all(CancelReason.SHUTDOWN)
        if cancelled:
            log.warning("cancelled %d running statement(s)", cancelled)
        self.tracker.wait_idle(FORCED_EXIT_REPORT_SECS)
        self.signals.force.set()
