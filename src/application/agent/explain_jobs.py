"""Dry-run and preflight EXPLAIN jobs: read-only plans for approvers.

Unlike dbward 0.2, these are bounded (at most `max_concurrent_tasks` at once, one at
least), tracked (drain waits for them, `in_flight_preflight` reports them) and never
dropped: a preflight the server claimed for us always gets an answer.
"""

from __future__ import annotations

import logging

from application.agent.database_registry import DatabaseRegistry
from application.agent.job_tracker import JobTracker
from application.agent.ports import ServerPort
from application.agent.threads import start_task
from domain.agent.errors import DatabaseError, ServerConflict, ServerError, ServerNotFound
from domain.shared.errors import DbwardError
from domain.shared.explain import ExplainRefused, check_explainable
from domain.shared.jobs import DryRunJob, ExplainOutcome, PreflightJob
from domain.shared.scopes import Scope

log = logging.getLogger("dbward.agent.explain")

EXPLAIN_TIMEOUT_SECS = 5


class ExplainRunner:
    def __init__(
        self,
        server: ServerPort,
        registry: DatabaseRegistry,
        tracker: JobTracker,
        *,
        max_parallel: int,
    ) -> None:
        self._server = server
        self._registry = registry
        self._tracker = tracker
        self._max_parallel = max(1, max_parallel)

    def offer_dry_run(self, job: DryRunJob) -> bool:
        """Take a dry-run job if this agent can serve it now; others may take it otherwise."""
        if self._registry.port_for(job.scope) is None:
            return False
        if not self._tracker.try_start_explain(job.id, self._max_parallel):
            return False
        start_task(f"dry-run-{job.id}", lambda: self._run_dry_run(job))
        return True

    def accept_preflight(self, job: PreflightJob, *, refuse_reason: str | None = None) -> bool:
        """Answer a preflight the server claimed for us: a plan, or an error, never silence."""
        if not self._tracker.start_explain_unbounded(job.id):
            return False
        start_task(f"preflight-{job.id}", lambda: self._run_preflight(job, refuse_reason))
        return True

    def _run_dry_run(self, job: DryRunJob) -> None:
        try:
            try:
                claim_token = self._server.claim_dry_run(job.id)
            except (ServerConflict, ServerNotFound) as exc:
                log.debug("dry-run %s taken elsewhere: %s", job.id, exc)
                return
            except ServerError as exc:
                if exc.status in (400, 501):
                    log.debug("dry-run %s not claimable: %s", job.id, exc)
                else:
                    log.warning("dry-run %s claim failed: %s", job.id, exc)
                return
            except DbwardError as exc:
                log.warning("dry-run %s claim failed: %s", job.id, exc)
                return
            outcome = self._explain(job.scope, job.sql)
            try:
                self._server.submit_dry_run_result(job.id, claim_token, outcome)
            except DbwardError as exc:
                log.warning("dry-run %s result not delivered: %s", job.id, exc)
        finally:
            self._tracker.finish_explain(job.id)

    def _run_preflight(self, job: PreflightJob, refuse_reason: str | None) -> None:
        try:
            if refuse_reason is not None:
                outcome = ExplainOutcome(error=refuse_reason)
            else:
                outcome = self._explain(job.scope, job.sql)
            try:
                self._server.submit_preflight_result(job.id, job.claim_token, outcome)
            except ServerError as exc:
                if exc.status == 410:
                    log.debug("preflight %s expired before its answer: %s", job.id, exc)
                else:
                    log.warning("preflight %s result refused: %s", job.id, exc)
            except DbwardError as exc:
                log.warning("preflight %s result not delivered: %s", job.id, exc)
        finally:
            self._tracker.finish_explain(job.id)

    def _explain(self, scope: Scope, sql: str) -> ExplainOutcome:
        port = self._registry.port_for(scope)
        if port is None:
            return ExplainOutcome(error=f"database {scope} is unavailable on this agent")
        try:
            statement = check_explainable(sql)
            return ExplainOutcome(plan=port.explain(statement, EXPLAIN_TIMEOUT_SECS))
        except ExplainRefused as exc:
            return ExplainOutcome(error=f"explain refused: {exc}")
        except DatabaseError as exc:
            self._registry.report_error(scope, exc)
            return ExplainOutcome(error=str(exc))
        except Exception as exc:
            log.exception("EXPLAIN on %s: unexpected error", scope)
            return ExplainOutcome(error=f"agent error: {type(exc).__name__}: {exc}")
