"""Hands results to the server and keeps trying until the lease end plus a grace period.

Results are never silently lost (DESIGN.md §3 improvement 4): a server restart or a network
blip while a long job finishes must not turn a finished job into `execution_lost`. The loop
is written out rather than taken from a retry library because every wait must be an
interruptible wait on the injected clock (forced shutdown, fake time in tests).
"""

from __future__ import annotations

import logging
import threading

from application.agent.ports import Clock, ServerPort
from domain.agent.errors import ServerConflict, ServerError
from domain.shared.backoff import ExponentialBackoff
from domain.shared.errors import DbwardError
from domain.shared.jobs import JobResult

log = logging.getLogger("dbward.agent.results")

SUBMIT_BACKOFF = ExponentialBackoff(initial_secs=1.0, max_secs=15.0)


class ResultSubmitter:
    def __init__(self, server: ServerPort, clock: Clock, abort: threading.Event) -> None:
        self._server = server
        self._clock = clock
        self._abort = abort

    def submit(self, execution_id: str, result: JobResult, budget_secs: float) -> bool:
        """Submit `result`; True once the server has it, False if it was given up."""
        deadline = self._clock.monotonic() + budget_secs
        attempt = 0
        while True:
            try:
                self._server.submit_result(execution_id, result)
                if attempt:
                    log.info(
                        "execution %s: result delivered after %d retries", execution_id, attempt
                    )
                return True
            except ServerConflict as exc:
                if attempt:
                    # An earlier attempt that timed out on our side reached the server.
                    log.info("execution %s: the server already has this result", execution_id)
                    return True
                log.warning(
                    "execution %s: the server no longer accepts this result: %s",
                    execution_id,
                    exc,
                )
                return False
            except ServerError as exc:
                if not exc.retryable:
                    log.error("execution %s: result refused: %s", execution_id, exc)
                    return False
                error: DbwardError = exc
            except DbwardError as exc:
                error = exc
            attempt += 1
            delay = SUBMIT_BACKOFF.delay(attempt)
            if self._clock.monotonic() + delay > deadline:
                log.error(
                    "execution %s: giving up on the result after %d attempts: %s",
                    execution_id,
                    attempt,
                    error,
                )
                return False
            log.warning(
                "execution %s: result submission failed (%s); retrying in %.0fs",
                execution_id,
                error,
                delay,
            )
            if self._clock.wait(self._abort, delay):
                log.error("execution %s: result abandoned by a forced shutdown", execution_id)
                return False
