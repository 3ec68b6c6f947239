"""Results just recorded wait a few seconds for the streams of their request."""

from __future__ import annotations

from application.server.requests.fresh_results import FreshResults
from application.server.requests.results import ResultEnvelope

DONE = ResultEnvelope(success=True, execution_id="e-1", result_data_raw='{"rows": []}')


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_started_before_the_result_gets_it_and_so_does_the_next() -> None:
    clock = Clock()
    fresh = FreshResults(keep_secs=5, monotonic=clock)
    since = fresh.moment()
    clock.now += 1
    fresh.put("r-1", DONE)
    assert fresh.get("r-1", since) == DONE
    assert fresh.get("r-1", since) == DONE  # several streams may wait on one request
    assert fresh.get("r-2", since) is None


def test_a_stream_started_after_the_result_reads_the_store_instead() -> None:
    """An envelope older than the stream may belong to an earlier run of the request."""
    clock = Clock()
    fresh = FreshResults(keep_secs=5, monotonic=clock)
    fresh.put("r-1", DONE)
    clock.now += 0.5
    assert fresh.get("r-1", fresh.moment()) is None


def test_envelopes_go_after_keep_secs_and_past_the_size_bound() -> None:
    clock = Clock()
    fresh = FreshResults(keep_secs=5, max_kept=2, monotonic=clock)
    since = fresh.moment()
    fresh.put("r-1", DONE)
    clock.now += 5
    assert fresh.get("r-1", since) is None
    fresh.put("r-2", DONE)
    fresh.put("r-3", DONE)
    fresh.put("r-4", DONE)
    assert [fresh.get(r, since) for r in ("r-2", "r-3", "r-4")] == [None, DONE, DONE]


def test_the_oldest_go_when_the_kept_text_passes_its_bound() -> None:
    clock = Clock()
    fresh = FreshResults(keep_secs=5, max_kept_chars=25, monotonic=clock)
    since = fresh.moment()
    body = ResultEnvelope(success=True, result_data_raw="x" * 10)
    for request_id in ("r-1", "r-2", "r-3"):
        fresh.put(request_id, body)
    assert [fresh.get(r, since) for r in ("r-1", "r-2", "r-3")] == [None, body, body]
    fresh.put("r-2", body)  # recorded again: counted once
    assert [fresh.get(r, since) for r in ("r-2", "r-3")] == [body, body]
