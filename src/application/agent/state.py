"""State shared by the agent's services: shutdown signals, readiness inputs, uptime."""

from __future__ import annotations

import itertools
import logging
import threading

from application.agent.ports import ProbePort

log = logging.getLogger("dbward.agent")


class ShutdownSignals:
    """First signal drains; a second one (or the drain timeout) forces the exit.

    `wake` is set by anything the poll loop should react to at once: a signal, a job
    slot freeing up.
    """

    def __init__(self) -> None:
        self.drain = threading.Event()
        self.force = threading.Event()
        self.wake = threading.Event()
        # A counter rather than a lock: this runs inside a signal handler, which must never
        # wait for a lock the interrupted main thread may be holding.
        self._requests = itertools.count(1)

    def request(self) -> None:
        count = next(self._requests)
        if count == 1:
            log.info("shutdown requested: draining (a second signal cancels running work)")
            self.drain.set()
        else:
            log.warning("second shutdown signal: cancelling running work")
            self.force.set()
        self.wake.set()


class Readiness:
    """Readiness is the conjunction of conditions; the probe changes only on transitions."""

    def __init__(self, probes: ProbePort) -> None:
        self._probes = probes
        self._lock = threading.Lock()
        self._ready: bool | None = None

    def update(self, ready: bool, why: str = "") -> None:
        with self._lock:
            if self._ready == ready:
                return
            self._ready = ready
        try:
            self._probes.set_ready(ready)
        except OSError as exc:
            # A probe that cannot be written must not stop the agent; supervisors will see
            # the stale file, and the log says why.
            log.error("cannot update the readiness probe: %s", exc)
        if ready:
            log.info("ready: accepting jobs")
        else:
            log.warning("not ready: %s", why or "not accepting jobs")

    @property
    def ready(self) -> bool:
        return bool(self._ready)
