"""Hands results to the server and keeps trying until the lease end plus a grace period.

Results are never silently lost (docs/agent.md §5 improvement 4): a server restart or a network
blip while a long job finishes must not turn a finished job into `execution_lost`. The
retries run through `application.agent.retrying`, so every wait is an interruptible wait on
the injected clock (a forced shutdown abandons it; tests run on fake time).
"""

from __future__ import annotations

import logging
import threading

from application.agent.ports import Clock, ServerPort
from application.agent.retrying import DeadlinePassed, Failure, RetryAborted, backoff_retrying
from domain.agent.errors import ServerConflict, ServerError
from domain.shared.backoff import ExponentialBackoff
from domain.shared.errors import DbwardError
from domain.shared.jobs import JobResult

log = logging.getLogger("dbward.agent.results")

SUBMIT_BACKOFF = ExponentialBackoff(initial_secs=1.0, max_secs=15.0)


def _worth_retrying(error: BaseException) -> bool:
    """Any agent error, except the server's final word: a 409 or another refusal (4xx)."""
    if isinstance(error, ServerConflict):
        return False
    if isinstance(error, ServerError):
        return error.retryable
    return isinstance(error, DbwardError)


class ResultSubmitter:
    def __init__(self, server: ServerPort, clock: Clock, abort: threading.Event) -> None:
        self._server = server
        self._clock = clock
        self._abort = abort

    def submit(self, execution_id: str, result: JobResult, budget_secs: float) -> bool:
        """Submit `result`; True once the server has it, False if it was given up."""
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            self._server.submit_result(execution_id, result)

        def log_retry(failure: Failure, delay: float) -> None:
            log.warning(
                "execution %s: result submission failed (%s); retrying in %.0fs",
                execution_id,
                failure.error,
                delay,
            )

        retrying = backoff_retrying(
            SUBMIT_BACKOFF,
            clock=self._clock,
            abort=self._abort,
            retryable=_worth_retrying,
            deadline=self._clock.monotonic() + budget_secs,
            before_wait=log_retry,
        )
        try:
            retrying(attempt)
        except ServerConflict as exc:
            if attempts > 1:
                # An earlier attempt that timed out on our side reached the server.
                log.info("execution %s: the server already has this result", execution_id)
                return True
            log.warning(
                "execution %s: the server no longer accepts this result: %s", execution_id, exc
            )
            return False
        except ServerError as exc:
            log.error("execution %s: result refused: %s", execution_id, exc)
            return False
        except DeadlinePassed as gave_up:
            log.error(
                "execution %s: giving up on the result after %d attempts: %s",
                execution_id,
                gave_up.attempts,
                gave_up.last_error,
            )
            return False
        except RetryAborted:
            log.error("execution %s: result abandoned by a forced shutdown", execution_id)
            return False
        if attempts > 1:
            log.info("execution %s: result delivered after %d retries", execution_id, attempts - 1)
        return True
