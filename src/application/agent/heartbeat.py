"""Per-job heartbeats on their own thread.

The renewal loop must never wait behind database I/O: a starved renewal is the most
reported failure of job agents (GitHub's "lost communication with the server"). A
`cancelled: true` reply or a lost lease (404/409) fires the job's cancel token; the database
adapter turns that into a real statement cancel, except for migrations, which finish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from application.agent.cancellation import CancelReason, CancelToken
from application.agent.ports import Clock, ServerPort
from application.agent.threads import BackgroundTask, start_task
from domain.agent.errors import ServerConflict, ServerNotFound
from domain.shared.errors import DbwardError

log = logging.getLogger("dbward.agent.heartbeat")


class HeartbeatMonitor:
    def __init__(
        self,
        server: ServerPort,
        clock: Clock,
        *,
        execution_id: str,
        interval_secs: float,
        cancel: CancelToken,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self._server = server
        self._clock = clock
        self._execution_id = execution_id
        self._interval = interval_secs
        self._cancel = cancel
        self._on_failure = on_failure
        self._stop = threading.Event()
        #: Guards `_beating` against `stop()`: a beat starts only while not stopped.
        self._lock = threading.Lock()
        self._beating = False
        self._task: BackgroundTask | None = None
        self.beats = 0
        self.lease_lost = False

    def start(self) -> HeartbeatMonitor:
        self._task = start_task(f"heartbeat-{self._execution_id}", self._run)
        return self

    def stop(self) -> None:
        """After this returns no beat is in flight and none starts: `lease_lost` is final.

        Only a beat in flight is waited for. A monitor waiting for its next beat (most
        jobs end before the first) is left to wake up and end by itself, so the job does
        not wait for that thread on its way to the result (docs/performance.md, "Agent").
        """
        with self._lock:
            self._stop.set()
            beating = self._beating
        if beating and self._task is not None:
            self._task.join()

    def _run(self) -> None:
        while not self._clock.wait(self._stop, self._interval):
            with self._lock:
                if self._stop.is_set():
                    return
                self._beating = True
            try:
                keep_going = self.beat()
            finally:
                with self._lock:
                    self._beating = False
            if not keep_going:
                return

    def beat(self) -> bool:
        """Send one heartbeat; False when heartbeating should stop (the lease is gone)."""
        try:
            reply = self._server.heartbeat(self._execution_id)
        except (ServerConflict, ServerNotFound) as exc:
            self._on_failure()
            self.lease_lost = True
            log.warning(
                "execution %s: lease lost (%s); stopping the work, its result is withheld",
                self._execution_id,
                exc,
            )
            self._cancel.cancel(CancelReason.LEASE_LOST)
            return False
        except DbwardError as exc:
            self._on_failure()
            # The lease outlives several missed beats; keep trying at the same pace.
            log.warning("execution %s: heartbeat failed: %s", self._execution_id, exc)
            return True
        self.beats += 1
        if reply.cancelled and self._cancel.cancel(CancelReason.SERVER_CANCELLED):
            log.warning("execution %s: cancelled by the server", self._execution_id)
        return True
