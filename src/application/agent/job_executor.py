"""Runs one dispatched job end to end: claim, verify, execute, heartbeat, report.

Each job runs on its own worker thread; its heartbeats run on another. What gets executed
is derived only from signed data, and a token that fails verification becomes a failed
result, never an exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from application.agent.cancellation import CancelReason, CancelToken
from application.agent.claim_backoff import ClaimBackoff
from application.agent.database_registry import DatabaseRegistry
from application.agent.heartbeat import HeartbeatMonitor
from application.agent.job_tracker import JobTracker
from application.agent.metrics import NO_AGENT_METRICS, AgentMetrics, JobOutcome
from application.agent.ports import Clock, DatabasePort, ServerPort, SignatureVerifier
from application.agent.result_submitter import ResultSubmitter
from application.agent.settings import AgentSettings
from application.log_context import bind_ids, bound_ids
from domain.agent.errors import (
    DatabaseError,
    MigrationError,
    PartialMigrationError,
    QueryCancelled,
    QueryTimeout,
    ServerConflict,
    TokenVerificationError,
)
from domain.agent.lease import lease_seconds, submit_budget_secs
from domain.agent.result_limits import ResultLimits
from domain.agent.token_verification import (
    parse_rfc3339,
    statements_to_execute,
    verify_execution_token,
)
from domain.shared.errors import DbwardError
from domain.shared.jobs import ClaimedJob, DispatchedJob, ExecutionOutput, JobResult
from domain.shared.operations import Operation, UnsupportedOperationError, parse_operation
from domain.shared.scopes import Scope

log = logging.getLogger("dbward.agent.jobs")

#: Fallback lease when a claim's `lease_expires_at` cannot be read.
_DEFAULT_LEASE_SECS = 60.0
_MAX_BELIEVABLE_LEASE_SECS = 7 * 24 * 3600.0


class JobExecutor:
    def __init__(
        self,
        *,
        settings: AgentSettings,
        server: ServerPort,
        registry: DatabaseRegistry,
        tracker: JobTracker,
        verifier: SignatureVerifier,
        clock: Clock,
        submitter: ResultSubmitter,
        after_migration: Callable[[Scope], object],
        on_finished: threading.Event,
        claim_backoff: ClaimBackoff,
        metrics: AgentMetrics = NO_AGENT_METRICS,
    ) -> None:
        self._settings = settings
        self._server = server
        self._registry = registry
        self._tracker = tracker
        self._verifier = verifier
        self._clock = clock
        self._submitter = submitter
        self._after_migration = after_migration
        self._on_finished = on_finished
        self._claim_backoff = claim_backoff
        self._metrics = metrics

    def run(
        self, job: DispatchedJob, cancel: CancelToken, claimed: ClaimedJob | None = None
    ) -> None:
        """Entry point of a worker thread; always releases the job's slot. `claimed`: the
        server already claimed the job for this agent, with its poll (docs/protocol.md
        §3.2): it is run without a claim call."""
        try:
            with bound_ids(job_id=job.id, request_id=job.id):
                self._run(job, cancel, claimed)
        except Exception:
            log.exception("job %s: unexpected error", job.id)
        finally:
            self._tracker.finish(job.id)
            self._on_finished.set()

    def _run(self, job: DispatchedJob, cancel: CancelToken, claimed: ClaimedJob | None) -> None:
        claim = self._claim(job) if claimed is None else claimed
        if claim is None:
            return
        claimed_at = self._clock.now()
        started = self._clock.monotonic()
        self._tracker.attach_execution(job.id, claim.execution_id)
        bind_ids(execution_id=claim.execution_id)
        log.info(
            "job %s: claimed execution %s (%s on %s)",
            job.id,
            claim.execution_id,
            claim.operation,
            claim.scope,
        )
        result = self._execute(claim, cancel, started)
        budget = submit_budget_secs(self._lease_secs(claim, claimed_at))
        delivered = self._submitter.submit(claim.execution_id, result, budget)
        self._metrics.job_finished(
            job_outcome(result, delivered=delivered),
            self._clock.monotonic() - started,
            result_size(result),
        )
        log.info(
            "job %s: %s in %d ms%s",
            job.id,
            "succeeded" if result.success else f"failed: {result.error_message}",
            result.duration_ms or 0,
            "" if delivered else " (result not delivered)",
        )
        if delivered and result.success and _mutates_schema(claim.operation):
            self._after_migration(claim.scope)

    def _claim(self, job: DispatchedJob) -> ClaimedJob | None:
        """The claim call (§3.3); None when the job is not ours to run."""
        if self._registry.port_for(job.scope) is None:
            # The database went down while the poll was held: leave the job to others.
            log.debug("job %s: %s is unavailable here, not claiming", job.id, job.scope)
            return None
        try:
            claim = self._server.claim(job.id, self._settings.lease_duration_secs)
        except ServerConflict as exc:
            pause = self._claim_backoff.record_failure(job.id)
            log.debug("job %s: not claimable (%s); skipped for %.0fs", job.id, exc, pause)
            return None
        except DbwardError as exc:
            pause = self._claim_backoff.record_failure(job.id)
            log.warning(
                "job %s: claim failed: %s (offered again while dispatched, next try in %.0fs)",
                job.id,
                exc,
                pause,
            )
            return None
        self._claim_backoff.clear(job.id)
        return claim

    def _execute(self, claim: ClaimedJob, cancel: CancelToken, started: float) -> JobResult:
        def failed(message: str) -> JobResult:
            return JobResult.failure(message, duration_ms=self._elapsed_ms(started))

        try:
            verify_execution_token(
                claim, now=self._clock.now(), check_signature=self._verifier.verify
            )
            operation = parse_operation(claim.operation)
        except TokenVerificationError as exc:
            log.error("execution %s: %s", claim.execution_id, exc)
            return failed(str(exc))
        except UnsupportedOperationError as exc:
            return failed(str(exc))
        if operation not in self._settings.operations:
            return failed(f"operation {operation.value} is not enabled on this agent")
        if not self._registry.is_configured(claim.scope):
            return failed(f"config error: no database configured for {claim.scope}")
        port = self._registry.port_for(claim.scope)
        if port is None:
            return failed(f"database {claim.scope} is unavailable on this agent (degraded)")

        monitor = HeartbeatMonitor(
            self._server,
            self._clock,
            execution_id=claim.execution_id,
            interval_secs=self._settings.heartbeat_interval_ms / 1000,
            cancel=cancel,
            on_failure=self._metrics.heartbeat_failed,
        ).start()
        try:
            output = self._dispatch(operation, claim, port, cancel)
        except TokenVerificationError as exc:
            return failed(str(exc))
        except PartialMigrationError as exc:
            self._registry.report_error(claim.scope, exc)
            return JobResult(
                success=False,
                result_data=exc.result_data,
                error_message=str(exc),
                duration_ms=self._elapsed_ms(started),
            )
        except DatabaseError as exc:
            self._registry.report_error(claim.scope, exc)
            return failed(_describe(exc, cancel))
        except Exception as exc:
            # A result must always reach the server, or the request would sit in `running`
            # until its lease expires; an adapter bug becomes a failed result, not silence.
            log.exception("execution %s: unexpected error", claim.execution_id)
            return failed(f"agent error: {type(exc).__name__}: {exc}")
        finally:
            monitor.stop()
        self._registry.report_success(claim.scope)
        if monitor.lease_lost:
            if operation is Operation.EXECUTE_SELECT:
                return failed("lease lost: the server gave this execution up; result withheld")
            # Writes that completed are reported as they are: claiming failure for a
            # committed change would invite running it twice.
            log.warning(
                "execution %s: lease lost, but the %s completed; reporting its real outcome",
                claim.execution_id,
                operation.value,
            )
        return JobResult(
            success=True,
            result_data=output.result_data,
            rows_affected=output.rows_affected,
            truncated=output.truncated,
            total_rows=output.total_rows,
            duration_ms=self._elapsed_ms(started),
        )

    def _dispatch(
        self, operation: Operation, claim: ClaimedJob, port: DatabasePort, cancel: CancelToken
    ) -> ExecutionOutput:
        timeout = (
            claim.statement_timeout_secs
            if claim.statement_timeout_secs is not None
            else self._settings.statement_timeout_secs
        )
        if operation in (Operation.EXECUTE_SELECT, Operation.EXECUTE_DML):
            limits = ResultLimits.for_claim(
                claim.max_rows, self._settings.max_result_rows, self._settings.max_result_bytes
            )
            execute = (
                port.execute_select if operation is Operation.EXECUTE_SELECT else port.execute_dml
            )
            return execute(statements_to_execute(claim), timeout, limits, cancel)
        return port.run_migration(operation, claim.detail, timeout, cancel)

    def _lease_secs(self, claim: ClaimedJob, claimed_at: datetime) -> float:
        """The granted lease; a skewed clock falls back to the default rather than misleading."""
        try:
            expires = parse_rfc3339(claim.lease_expires_at)
        except ValueError:
            return _DEFAULT_LEASE_SECS
        secs = lease_seconds(expires, claimed_at)
        return secs if 0 < secs <= _MAX_BELIEVABLE_LEASE_SECS else _DEFAULT_LEASE_SECS

    def _elapsed_ms(self, started: float) -> int:
        return int((self._clock.monotonic() - started) * 1000)


def job_outcome(result: JobResult, *, delivered: bool) -> JobOutcome:
    if not delivered:
        return JobOutcome.UNDELIVERED
    return JobOutcome.SUCCEEDED if result.success else JobOutcome.FAILED


def result_size(result: JobResult) -> int:
    """Bytes of result data sent, as UTF-8 (what the server stores)."""
    if result.result_data is None:
        return 0
    return len(result.result_data.encode("utf-8", "surrogatepass"))


def _mutates_schema(operation: str) -> bool:
    try:
        return parse_operation(operation).mutates_schema
    except UnsupportedOperationError:
        return False


def _describe(error: DatabaseError, cancel: CancelToken) -> str:
    """Error text in dbward 0.2's shape (`driver error: …`, `migration error: …`)."""
    if isinstance(error, MigrationError):
        return f"migration error: {error}"
    if isinstance(error, QueryCancelled) or (
        cancel.cancelled and not isinstance(error, QueryTimeout)
    ):
        reason = cancel.reason
        if reason is CancelReason.LEASE_LOST:
            return "driver error: query cancelled (lease lost)"
        if reason is CancelReason.SHUTDOWN:
            return "driver error: query cancelled (agent shutting down)"
        return "driver error: query cancelled"
    if isinstance(error, QueryTimeout):
        return "driver error: query timed out"
    return f"driver error: {error}"
