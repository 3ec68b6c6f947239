"""Results this process has just recorded, handed to the result streams waiting on them.

A result stream woken by a result's notification would read back, in a transaction of its
own, what the result route committed a moment before. The result route leaves the envelope
here instead, for a few seconds, and the woken stream takes it (docs/server.md §1.8). The
envelope is built by the same function from the same summary and body the stream would
read, so the answer is the same either way. A result recorded by another replica is not
here: streams read it from the store, as before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from application.server.requests.results import ResultEnvelope

#: How long an envelope waits for the streams of its request.
KEEP_SECS = 5.0
#: The most envelopes kept at once, and the most result text they hold between them;
#: past either the oldest go first (a result is at most 64 KiB here).
MAX_KEPT = 1024
MAX_KEPT_CHARS = 8 * 1024 * 1024


class FreshResults:
    """Envelopes by request id, each kept `keep_secs`. Thread-safe: results are recorded
    on the event loop or on worker threads."""

    def __init__(
        self,
        keep_secs: float = KEEP_SECS,
        max_kept: int = MAX_KEPT,
        max_kept_chars: int = MAX_KEPT_CHARS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep = keep_secs
        self._max = max_kept
        self._max_chars = max_kept_chars
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[float, ResultEnvelope]] = OrderedDict()
        self._chars = 0

    def put(self, request_id: str, envelope: ResultEnvelope) -> None:
        now = self._monotonic()
        with self._lock:
            self._forget(request_id)
            self._kept[request_id] = (now, envelope)
            self._chars += _chars(envelope)
            while self._kept:
                oldest, (at, _) = next(iter(self._kept.items()))
                within = len(self._kept) <= self._max and self._chars <= self._max_chars
                if within and now - at < self._keep:
                    break
                self._forget(oldest)

    def _forget(self, request_id: str) -> None:
        entry = self._kept.pop(request_id, None)
        if entry is not None:
            self._chars -= _chars(entry[1])

    def moment(self) -> float:
        """Now, on the clock `get`'s `since` is read against."""
        return self._monotonic()

    def get(self, request_id: str, since: float) -> ResultEnvelope | None:
        """The envelope recorded for `request_id` at or after `since` (a stream's own
        start: an older one belongs to an earlier run of the request) and in the last
        `keep_secs`. Several streams may wait on one request, so it stays for the others."""
        with self._lock:
            entry = self._kept.get(request_id)
        if entry is None or entry[0] < since or self._monotonic() - entry[0] >= self._keep:
            return None
        return entry[1]


def _chars(envelope: ResultEnvelope) -> int:
    return len(envelope.result_data_raw or "") + len(envelope.error_message or "")
