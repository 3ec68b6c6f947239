"""The in-memory result relay: bounded, short-lived, and safe to share between threads."""

from __future__ import annotations

import threading

from adapters.memory.result_relay import InMemoryResultRelay
from application.server.ports.result_relay import ResultRelay


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_relayed_body_is_read_back_until_it_expires() -> None:
    clock = FakeMonotonic()
    relay: ResultRelay = InMemoryResultRelay(max_slots=10, ttl_secs=60, monotonic=clock)
    relay.put("exec-1", '{"rows":[]}')
    assert relay.get("exec-1") == '{"rows":[]}'
    assert relay.get("exec-1") == '{"rows":[]}'  # reading does not consume it
    clock.now += 60
    assert relay.get("exec-1") == '{"rows":[]}'  # expiry is strictly after the TTL
    clock.now += 0.001
    assert relay.get("exec-1") is None
    assert relay.get("never-put") is None


def test_the_oldest_body_is_evicted_beyond_the_bound() -> None:
    relay = InMemoryResultRelay(max_slots=2, ttl_secs=60)
    relay.put("a", "1")
    relay.put("b", "2")
    relay.put("a", "1 again")  # a put refreshes: "b" is now the oldest
    relay.put("c", "3")
    assert (relay.get("a"), relay.get("b"), relay.get("c")) == ("1 again", None, "3")


def test_a_bound_below_one_still_keeps_the_latest_body() -> None:
    relay = InMemoryResultRelay(max_slots=0)
    relay.put("a", "1")
    relay.put("b", "2")
    assert (relay.get("a"), relay.get("b")) == (None, "2")


def test_puts_from_many_threads_respect_the_bound() -> None:
    relay = InMemoryResultRelay(max_slots=50, ttl_secs=60)

    def fill(prefix: str) -> None:
        for index in range(200):
            relay.put(f"{prefix}-{index}", str(index))

    threads = [threading.Thread(target=fill, args=(str(n),)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = [f"{n}-{i}" for n in range(4) for i in range(200) if relay.get(f"{n}-{i}")]
    assert len(kept) == 50
