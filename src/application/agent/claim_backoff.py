"""Requests whose claim just failed are skipped for a while.

A job can stay `dispatched` although this agent cannot claim it: another migration holds
the database (409), the server refuses the capability (403), or it is briefly failing
(5xx). Without a pause the agent would re-poll and re-claim it in a tight loop; with one,
each such request is retried after 1 s, 2 s, 4 s … at most 15 s.
"""

from __future__ import annotations

import threading

from application.agent.ports import Clock
from domain.shared.backoff import ExponentialBackoff

CLAIM_RETRY = ExponentialBackoff(initial_secs=1.0, max_secs=15.0)


class ClaimBackoff:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, int]] = {}

    def record_failure(self, request_id: str) -> float:
        """Note a failed claim; returns how long the request is now skipped."""
        with self._lock:
            _, failures = self._entries.get(request_id, (0.0, 0))
            delay = CLAIM_RETRY.delay(failures + 1)
            self._entries[request_id] = (self._clock.monotonic() + delay, failures + 1)
            return delay

    def clear(self, request_id: str) -> None:
        with self._lock:
            self._entries.pop(request_id, None)

    def should_skip(self, request_id: str) -> bool:
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                return False
            if now < entry[0]:
                return True
            # Past its pause: try again, but keep the failure count until a claim succeeds,
            # and forget requests that have not come back for a while.
            if now - entry[0] > CLAIM_RETRY.max_secs * 4:
                del self._entries[request_id]
            return False
