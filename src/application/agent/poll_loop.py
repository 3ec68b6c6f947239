"""The poll loop: advertise healthy scopes, take jobs, pace the next poll.

`step()` is one iteration and returns how long to wait before the next, so tests drive the
loop step by step with a fake clock. Long-poll (docs/agent.md §5 improvement 1): the poll asks
the server to hold it for `poll_wait_ms`; a server that honours it says so by echoing
`wait_ms`, and the agent re-polls at once; a server that ignores it answers at once, and
the agent falls back to `poll_interval_ms`. After an error the agent backs off with full
jitter, capped at 15 s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from application.agent.claim_backoff import ClaimBackoff
from application.agent.database_registry import DatabaseRegistry
from application.agent.explain_jobs import ExplainRunner
from application.agent.job_executor import JobExecutor
from application.agent.job_tracker import JobTracker
from application.agent.metrics import NO_AGENT_METRICS, AgentMetrics
from application.agent.ports import Clock, ProbePort, Random, ServerPort
from application.agent.settings import AgentSettings
from application.agent.state import Readiness, ShutdownSignals
from application.agent.threads import Interrupted, call_interruptibly, start_task
from domain.agent.errors import AgentFatalError, ServerUnauthorized
from domain.shared.backoff import FullJitterBackoff
from domain.shared.errors import DbwardError
from domain.shared.jobs import AgentStatus, DispatchedJob, PollClaim, PollRequest, PollResponse
from domain.shared.operations import UnsupportedOperationError, parse_operation
from domain.shared.scopes import Capabilities, Scope
from domain.shared.versions import AGENT_PROTOCOL_VERSION

log = logging.getLogger("dbward.agent.poll")

#: Consecutive poll failures after which readiness is removed.
UNREACHABLE_AFTER_FAILURES = 3
#: Consecutive 401 answers after which the token is taken as revoked and the agent exits.
REVOKED_AFTER_UNAUTHORIZED = 3
ERROR_BACKOFF = FullJitterBackoff(base_secs=1.0)
#: Bound on the draining polls at shutdown, so a dead server cannot eat the drain time.
DRAINING_POLL_TIMEOUT_SECS = 5.0


@dataclass(frozen=True)
class StepResult:
    """What one iteration did, for the runner and for tests."""

    delay_secs: float
    jobs_started: int = 0
    polled: bool = True
    error: DbwardError | None = None


class PollLoop:
    def __init__(
        self,
        *,
        settings: AgentSettings,
        server: ServerPort,
        registry: DatabaseRegistry,
        tracker: JobTracker,
        executor: JobExecutor,
        explains: ExplainRunner,
        clock: Clock,
        random: Random,
        probes: ProbePort,
        readiness: Readiness,
        signals: ShutdownSignals,
        agent_build: str,
        started_at: float,
        claim_backoff: ClaimBackoff,
        metrics: AgentMetrics = NO_AGENT_METRICS,
    ) -> None:
        self._settings = settings
        self._server = server
        self._registry = registry
        self._tracker = tracker
        self._executor = executor
        self._explains = explains
        self._clock = clock
        self._random = random
        self._probes = probes
        self._readiness = readiness
        self._signals = signals
        self._agent_build = agent_build
        self._started_at = started_at
        self._claim_backoff = claim_backoff
        self._metrics = metrics
        self._probe_failing = False
        self.consecutive_failures = 0
        self.consecutive_unauthorized = 0
        self.upgrade_required = False

    # --- one iteration -------------------------------------------------------------

    def step(self) -> StepResult:
        self._signals.wake.clear()
        self._registry.changed.clear()
        self._mark_alive()
        fatal = self._registry.fatal_error
        if fatal is not None:
            raise AgentFatalError(f"database credentials rejected: {fatal}")
        self._registry.start_due_reconnects(self._settings.poll_interval_ms / 1000)

        healthy = self._registry.healthy_scopes()
        free = max(self._settings.max_concurrent_tasks - self._tracker.in_flight, 0)
        limit = free if healthy and not self.upgrade_required else 0
        wait_ms = self._settings.poll_wait_ms if limit > 0 else 0
        request = self.build_request(healthy or self._registry.scopes, limit, wait_ms)
        sent_at = self._clock.monotonic()
        try:
            # A held poll is abandoned on shutdown, and when a database goes down or comes
            # back, so the next poll advertises the right scopes at once.
            response, adopted = call_interruptibly(
                "poll",
                lambda: self._poll_and_adopt(request),
                (self._signals.drain, self._registry.changed),
            )
        except Interrupted:
            return StepResult(delay_secs=0.0, polled=False)
        except DbwardError as exc:
            self._metrics.poll_finished(ok=False)
            return self._on_failure(exc)
        self._metrics.poll_finished(ok=True)
        # Health may have changed while the poll was held: start jobs only where it holds now.
        healthy = self._registry.healthy_scopes()
        return self._on_success(response, healthy, limit, wait_ms, sent_at, adopted)

    def _poll_and_adopt(self, request: PollRequest) -> tuple[PollResponse, int]:
        """The poll, and at once the jobs the server claimed for this agent, on the poll's
        own thread: they are ours even when the loop has abandoned this poll (a shutdown
        signal, a database going down or back), and only we can run them now."""
        response = self._server.poll(request)
        return response, self._start_claimed(response)

    def _start_claimed(self, response: PollResponse) -> int:
        started = 0
        for claimed in response.claimed_jobs:
            job = DispatchedJob(
                id=claimed.request_id,
                operation=claimed.operation,
                database=claimed.database,
                environment=claimed.environment,
            )
            cancel = self._tracker.try_start(job, self._clock.monotonic())
            if cancel is None:
                log.warning("job %s: claimed for this agent twice; running it once", job.id)
                continue
            start_task(f"job-{job.id}", partial(self._executor.run, job, cancel, claimed))
            started += 1
        return started

    def _mark_alive(self) -> None:
        try:
            self._probes.mark_alive()
        except OSError as exc:
            if not self._probe_failing:
                log.error("cannot refresh the liveness probe: %s", exc)
            self._probe_failing = True
        else:
            if self._probe_failing:
                log.info("liveness probe writable again")
            self._probe_failing = False

    def build_request(
        self, scopes: tuple[Scope, ...], limit: int, wait_ms: int, *, draining: bool = False
    ) -> PollRequest:
        now = self._clock.monotonic()
        advertised = set(scopes)
        return PollRequest(
            capabilities=Capabilities(scopes=scopes, operations=self._settings.operations),
            status=AgentStatus(
                in_flight=self._tracker.in_flight,
                in_flight_preflight=self._tracker.in_flight_explains,
                max_concurrent=self._settings.max_concurrent_tasks,
                draining=draining,
                uptime_secs=int(now - self._started_at),
                active_jobs=self._tracker.active_jobs(now),
            ),
            limit=limit,
            agent_version=AGENT_PROTOCOL_VERSION,
            agent_build=self._agent_build,
            wait_ms=wait_ms,
            degraded_scopes=tuple(
                scope for scope in self._registry.scopes if scope not in advertised
            ),
            # Jobs come back claimed from a server that knows the key (§3.2); dbward 0.2
            # ignores it, and its jobs are claimed one call each as before.
            claim=PollClaim(self._settings.lease_duration_secs) if limit > 0 else None,
        )

    # --- outcomes ------------------------------------------------------------------

    def _on_failure(self, error: DbwardError) -> StepResult:
        self.consecutive_failures += 1
        if isinstance(error, ServerUnauthorized):
            self.consecutive_unauthorized += 1
            if self.consecutive_unauthorized >= REVOKED_AFTER_UNAUTHORIZED:
                raise AgentFatalError(
                    f"the server rejected the agent token {self.consecutive_unauthorized} times "
                    "in a row (401): it was revoked or has expired. Create a new one with "
                    "`dbward token create --subject <agent> --subject-type agent "
                    "--role agent-default` and restart the agent"
                )
        else:
            self.consecutive_unauthorized = 0
        if self.consecutive_failures <= UNREACHABLE_AFTER_FAILURES:
            log.warning("poll failed (%d in a row): %s", self.consecutive_failures, error)
        if self.consecutive_failures >= UNREACHABLE_AFTER_FAILURES:
            self._readiness.update(False, f"server unreachable: {error}")
        delay = ERROR_BACKOFF.delay(self.consecutive_failures, self._random.uniform)
        return StepResult(delay_secs=delay, error=error)

    def _on_success(
        self,
        response: PollResponse,
        healthy: tuple[Scope, ...],
        limit: int,
        wait_ms: int,
        sent_at: float,
        adopted: int = 0,
    ) -> StepResult:
        if self.consecutive_failures >= UNREACHABLE_AFTER_FAILURES:
            log.info("server reachable again")
        self.consecutive_failures = 0
        self.consecutive_unauthorized = 0
        self._apply_version_gate(response)
        self._refresh_readiness(healthy)

        started = adopted + self._start_jobs(response, healthy, limit - adopted)
        self._start_explains(response, healthy)

        if started and self._tracker.in_flight < self._settings.max_concurrent_tasks:
            delay = 0.0
        elif response.jobs and not started:
            # Offered jobs we could not take (being claimed, recently refused, elsewhere):
            # a long-poll would answer at once again, so pace by the interval.
            delay = self._settings.poll_interval_ms / 1000
        elif wait_ms > 0 and response.held_wait_ms is not None:
            delay = 0.0
        else:
            elapsed = self._clock.monotonic() - sent_at
            delay = max(self._settings.poll_interval_ms / 1000 - elapsed, 0.0)
        return StepResult(delay_secs=delay, jobs_started=started)

    def _apply_version_gate(self, response: PollResponse) -> None:
        if response.upgrade_required and not self.upgrade_required:
            log.error(
                "the server requires a newer agent (minimum %s, this agent speaks %s): "
                "no jobs until the agent is upgraded",
                response.min_agent_version,
                AGENT_PROTOCOL_VERSION,
            )
        elif self.upgrade_required and not response.upgrade_required:
            log.info("the server accepts this agent's version again")
        self.upgrade_required = response.upgrade_required

    def _refresh_readiness(self, healthy: tuple[Scope, ...]) -> None:
        if self.upgrade_required:
            self._readiness.update(False, "the server requires an agent upgrade")
        elif not healthy:
            self._readiness.update(False, "no database is available")
        else:
            self._readiness.update(True)

    def _start_jobs(self, response: PollResponse, healthy: tuple[Scope, ...], limit: int) -> int:
        if self._signals.drain.is_set():
            return 0  # a poll answered after the signal: leave its jobs to other agents
        started = 0
        for job in response.jobs:
            if started >= limit:
                break
            if job.scope not in healthy:
                log.debug("job %s skipped: %s is not available here", job.id, job.scope)
                continue
            try:
                operation = parse_operation(job.operation)
            except UnsupportedOperationError:
                operation = None
            if operation is not None and operation not in self._settings.operations:
                log.debug("job %s skipped: operation %s not enabled", job.id, job.operation)
                continue
            if self._claim_backoff.should_skip(job.id):
                continue
            cancel = self._tracker.try_start(job, self._clock.monotonic())
            if cancel is None:
                continue  # already being handled: a repeated delivery
            start_task(f"job-{job.id}", partial(self._executor.run, job, cancel))
            started += 1
        return started

    def _start_explains(self, response: PollResponse, healthy: tuple[Scope, ...]) -> None:
        draining = self._signals.drain.is_set()
        if not draining:
            for dry_run in response.dry_run_jobs:
                if dry_run.scope in healthy:
                    self._explains.offer_dry_run(dry_run)
        for preflight in response.preflight_jobs:
            # Already claimed for us by the server: always answered, never dropped.
            reason = "agent is shutting down" if draining else None
            self._explains.accept_preflight(preflight, refuse_reason=reason)

    # --- drain ---------------------------------------------------------------------

    def draining_poll(self) -> PollResponse | None:
        """Tell the server we are draining (limit 0); answer any preflight it handed us."""
        request = self.build_request(self._registry.scopes, 0, 0, draining=True)
        try:
            response = call_interruptibly(
                "draining-poll",
                lambda: self._server.poll(request),
                self._signals.force,
                timeout_secs=DRAINING_POLL_TIMEOUT_SECS,
            )
        except (DbwardError, Interrupted) as exc:
            log.debug("draining poll failed: %s", exc)
            return None
        for preflight in response.preflight_jobs:
            self._explains.accept_preflight(preflight, refuse_reason="agent is shutting down")
        return response
