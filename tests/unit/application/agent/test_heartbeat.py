"""`HeartbeatMonitor.stop`: waits for a beat in flight, never for a monitor between beats."""

from __future__ import annotations

import threading
import time
from typing import cast

from application.agent.cancellation import CancelToken
from application.agent.heartbeat import HeartbeatMonitor
from application.agent.ports import ServerPort
from domain.agent.errors import ServerConflict
from domain.shared.jobs import HeartbeatReply
from tests.fakes.clock import RealClock


class _SlowServer:
    """Heartbeats that take as long as the test says; the last one loses the lease."""

    def __init__(self, *, lose_lease: bool = False) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.beats = 0
        self._lose_lease = lose_lease

    def heartbeat(self, execution_id: str) -> HeartbeatReply:
        self.beats += 1
        self.started.set()
        assert self.release.wait(5), "the test never released the beat"
        if self._lose_lease:
            raise ServerConflict(409, "lease lost")
        return HeartbeatReply(cancelled=False)


def _monitor(server: _SlowServer, interval_secs: float) -> HeartbeatMonitor:
    return HeartbeatMonitor(
        cast(ServerPort, server),
        RealClock(),
        execution_id="e-1",
        interval_secs=interval_secs,
        cancel=CancelToken(),
    ).start()


def test_stop_waits_for_a_beat_in_flight_so_lease_lost_is_final() -> None:
    server = _SlowServer(lose_lease=True)
    monitor = _monitor(server, interval_secs=0.01)
    assert server.started.wait(5)
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (monitor.stop(), stopped.set()), daemon=True)
    stopper.start()
    assert not stopped.wait(0.2), "stop returned while a beat was in flight"
    server.release.set()
    assert stopped.wait(5)
    assert monitor.lease_lost


def test_stop_between_beats_returns_at_once_and_no_beat_follows() -> None:
    server = _SlowServer()
    server.release.set()
    monitor = _monitor(server, interval_secs=30)
    started = time.monotonic()
    monitor.stop()
    assert time.monotonic() - started < 1
    deadline = time.monotonic() + 5
    while any(t.name == "heartbeat-e-1" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the monitor did not end after stop"
        time.sleep(0.01)
    assert server.beats == 0
    assert not monitor.lease_lost
