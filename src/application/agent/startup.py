"""Startup: liveness first, then the server, the databases and the first poll.

Each stage retries transient errors with the brief's backoff (1 s, 2 s, 4 s, 8 s, 15 s cap)
under one shared `startup_max_wait_secs` deadline, so Kubernetes pods that start together
do not crash-loop. Hard errors (a rejected token, wrong database credentials, a 4xx, a bad
public key) exit at once. Databases connect in parallel; when the deadline passes with the
server reachable and at least one database up, the agent starts with those and keeps
retrying the rest in degraded mode (docs/agent.md §5 improvement 7). A signal in any stage
ends startup cleanly. The retries are built by `application.agent.retrying`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import TypeVar

from application.agent.database_registry import DatabaseRegistry
from application.agent.ports import Clock, ProbePort, ServerPort, SignatureVerifier
from application.agent.retrying import DeadlinePassed, Failure, RetryAborted, backoff_retrying
from application.agent.settings import AgentSettings
from application.agent.state import ShutdownSignals
from application.agent.threads import Interrupted, call_interruptibly, spawn
from domain.agent.errors import DatabaseUnavailable
from domain.shared.backoff import ExponentialBackoff
from domain.shared.errors import DbwardError
from domain.shared.jobs import PollRequest, PollResponse
from domain.shared.scopes import Scope

log = logging.getLogger("dbward.agent.startup")

T = TypeVar("T")

#: After the first three warnings, a waiting stage logs a summary at most this often.
_SUMMARY_EVERY_SECS = 30.0
#: Each database connect attempt is bounded so a black-holed host cannot stall a stage.
CONNECT_TIMEOUT_SECS = 10.0


class StartupStatus(Enum):
    READY = "ready"
    SHUTDOWN = "shutdown"
    FAILED = "failed"


@dataclass
class StartupOutcome:
    status: StartupStatus
    message: str = ""
    first_poll: PollResponse | None = None
    down_databases: dict[Scope, str] = field(default_factory=dict)


class _StageFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Shutdown(Exception):
    pass


class Startup:
    def __init__(
        self,
        *,
        settings: AgentSettings,
        server: ServerPort,
        registry: DatabaseRegistry,
        verifier: SignatureVerifier,
        probes: ProbePort,
        clock: Clock,
        signals: ShutdownSignals,
        build_first_poll: Callable[[tuple[Scope, ...]], PollRequest],
    ) -> None:
        self._settings = settings
        self._server = server
        self._registry = registry
        self._verifier = verifier
        self._probes = probes
        self._clock = clock
        self._signals = signals
        self._build_first_poll = build_first_poll
        self._backoff = ExponentialBackoff(
            settings.startup_retry_initial_ms / 1000, settings.startup_retry_max_ms / 1000
        )
        self._deadline: float | None = None

    def run(self) -> StartupOutcome:
        try:
            self._probes.mark_alive()
        except OSError as exc:
            path = self._settings.liveness_probe_path
            return StartupOutcome(
                StartupStatus.FAILED, f"cannot write the liveness probe {path}: {exc}"
            )
        log.info("starting agent %s", self._settings.agent_id)
        if self._settings.startup_max_wait_secs > 0:
            self._deadline = self._clock.monotonic() + self._settings.startup_max_wait_secs
        try:
            self._retry("server public key", self._load_public_key)
            down = self._connect_databases()
            first_poll = self._retry("server (first poll)", self._first_poll)
        except _Shutdown:
            log.info("shutdown requested during startup")
            return StartupOutcome(StartupStatus.SHUTDOWN)
        except _StageFailed as exc:
            return StartupOutcome(StartupStatus.FAILED, exc.message)
        return StartupOutcome(StartupStatus.READY, first_poll=first_poll, down_databases=down)

    # --- stages --------------------------------------------------------------------

    def _load_public_key(self) -> None:
        key = call_interruptibly("public-key", self._server.fetch_public_key, self._signals.drain)
        self._verifier.load_public_key(key)

    def _first_poll(self) -> PollResponse:
        request = self._build_first_poll(self._registry.healthy_scopes() or self._registry.scopes)
        return call_interruptibly(
            "first-poll", lambda: self._server.poll(request), self._signals.drain
        )

    def _connect_databases(self) -> dict[Scope, str]:
        """Connect every database in parallel; returns those left down (degraded)."""
        scopes = self._registry.scopes
        done = threading.Event()
        lock = threading.Lock()
        pending = set(scopes)
        errors: dict[Scope, str] = {}
        attempted: set[Scope] = set()
        hard: list[str] = []
        stop = threading.Event()

        def connect(scope: Scope) -> None:
            attempts = 0

            def connect_once() -> None:
                nonlocal attempts
                if stop.is_set():  # the stage is over: all connected, a hard error, a signal
                    raise Interrupted(f"connect-{scope}")
                attempts += 1
                try:
                    try:
                        self._registry.connect(scope, CONNECT_TIMEOUT_SECS)
                    except DbwardError:
                        raise
                    except Exception as unexpected:
                        log.exception("database %s: unexpected connect error", scope)
                        raise DatabaseUnavailable(
                            f"{type(unexpected).__name__}: {unexpected}"
                        ) from unexpected
                except DbwardError as exc:
                    with lock:
                        errors[scope] = str(exc)
                        attempted.add(scope)
                    raise

            def log_failure(failure: Failure) -> None:
                if failure.attempt <= 3:
                    log.warning("database %s not reachable yet: %s", scope, failure.error)

            retrying = backoff_retrying(
                self._backoff,
                clock=self._clock,
                abort=stop,
                retryable=_transient,
                after_failure=log_failure,
            )
            try:
                retrying(connect_once)
            except (Interrupted, RetryAborted):
                return
            except DbwardError as exc:  # hard: transient errors are retried
                with lock:
                    hard.append(f"database {scope}: {exc}")
                done.set()
                return
            if attempts > 1:
                log.info("database %s recovered", scope)
            with lock:
                pending.discard(scope)
                errors.pop(scope, None)
                if not pending:
                    done.set()

        for scope in scopes:
            spawn(f"connect-{scope}", partial(connect, scope))
        try:
            while not done.is_set():
                if self._signals.drain.is_set():
                    raise _Shutdown
                with lock:
                    all_tried = (attempted | (set(scopes) - pending)) == set(scopes)
                if self._deadline_passed() and all_tried:
                    break
                self._clock.wait(done, 0.05)
        finally:
            stop.set()
        if hard:
            raise _StageFailed(hard[0])
        with lock:
            down = {scope: errors.get(scope, "not connected") for scope in pending}
        if down and len(down) == len(scopes):
            details = "; ".join(f"{scope}: {reason}" for scope, reason in sorted(down.items()))
            raise _StageFailed(f"startup timeout exceeded: no database is reachable ({details})")
        for scope, reason in down.items():
            self._registry.mark_down(scope, reason)
        return down

    # --- retry ---------------------------------------------------------------------

    def _retry(self, what: str, attempt_fn: Callable[[], T]) -> T:
        attempts = 0
        last_summary = self._clock.monotonic()

        def attempt() -> T:
            nonlocal attempts
            if self._signals.drain.is_set():
                raise _Shutdown
            attempts += 1
            return attempt_fn()

        def log_failure(failure: Failure) -> None:
            nonlocal last_summary
            now = self._clock.monotonic()
            if failure.attempt <= 3:
                log.warning(
                    "%s not reachable yet (attempt %d): %s", what, failure.attempt, failure.error
                )
            elif now - last_summary >= _SUMMARY_EVERY_SECS:
                log.warning(
                    "still waiting for %s after %d attempts: %s",
                    what,
                    failure.attempt,
                    failure.error,
                )
                last_summary = now

        retrying = backoff_retrying(
            self._backoff,
            clock=self._clock,
            abort=self._signals.drain,
            retryable=_transient,
            # One last attempt right at the deadline rather than giving up early.
            deadline=self._deadline,
            last_try_at_deadline=True,
            after_failure=log_failure,
        )
        try:
            result = retrying(attempt)
        except (Interrupted, RetryAborted):
            raise _Shutdown from None
        except DeadlinePassed as gave_up:
            raise _StageFailed(
                f"startup timeout exceeded waiting for {what}: {gave_up.last_error}"
            ) from None
        except DbwardError as exc:  # hard: transient errors are retried
            raise _StageFailed(f"{what}: {exc}") from None
        if attempts > 1:
            log.info("%s recovered after %d attempts", what, attempts - 1)
        return result

    def _deadline_passed(self) -> bool:
        return self._deadline is not None and self._clock.monotonic() >= self._deadline


def _transient(error: BaseException) -> bool:
    return isinstance(error, DbwardError) and not error.is_hard
