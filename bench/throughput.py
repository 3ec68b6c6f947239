"""End-to-end throughput: trivial `SELECT 1` requests through a real server and agent.

One agent with `max_concurrent_tasks = 8` and long-poll; several client threads each
create a request and wait for its result through the result stream, as `dbward execute`
does. Prints requests per second beside the same run's bare FastAPI + uvicorn rate with
as many client threads (`_bare.py`), and their ratio. The two are measured in turns
(`SEGMENTS` of each, alternating), so both come from the same minutes of a machine whose
speed drifts. Target: at least 0.10 of the bare rate. dbward 0.2's 1 s polling caps an
agent near max_concurrent_tasks per second; printed for comparison, measured in the same
run.
"""

from __future__ import annotations

import sys
import threading
import time

from _bare import RATE_REQUESTS, BareApp
from _stack import Stack, submit, verdict, wait_result

CLIENTS = 8
SLOTS = 8
REQUESTS = 600
CLASSIC_REQUESTS = 40
#: Turns of the bare rate and ours, alternating.
SEGMENTS = 3
TARGET_RATIO = 0.10


def run(stack: Stack, count: int) -> float:
    remaining = list(range(count))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        with stack.client() as client:
            while True:
                with lock:
                    if not remaining:
                        return
                    remaining.pop()
                try:
                    result = wait_result(client, submit(client))
                    if not result.get("success"):
                        raise RuntimeError(f"request failed: {result}")
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return count / elapsed


def _combined(count: int, rates: list[float]) -> float:
    """The rate of `count` requests per turn over every turn: total over total time."""
    return count * len(rates) / sum(count / rate for rate in rates)


def main() -> int:
    bare_rates: list[float] = []
    our_rates: list[float] = []
    with BareApp() as bare:
        stack = Stack()
        try:
            stack.start_server()
            stack.start_agent("fast", max_concurrent_tasks=SLOTS, poll_wait_ms=20000)
            run(stack, CLIENTS * 5)  # warm up: connections, statement caches
            for _ in range(SEGMENTS):
                bare_rates.append(bare.rate(CLIENTS, RATE_REQUESTS // SEGMENTS))
                our_rates.append(run(stack, REQUESTS // SEGMENTS))
            stack.stop_last()
            stack.start_agent(
                "classic", max_concurrent_tasks=4, poll_wait_ms=0, poll_interval_ms=1000
            )
            classic = run(stack, CLASSIC_REQUESTS)
        finally:
            stack.stop()
    bare_rate = _combined(RATE_REQUESTS // SEGMENTS, bare_rates)
    long_poll = _combined(REQUESTS // SEGMENTS, our_rates)
    ratio = long_poll / bare_rate
    print(f"throughput, SELECT 1 end to end, 1 agent x {SLOTS} slots, {CLIENTS} clients")
    print(
        f"  bare FastAPI (same run, {SEGMENTS} turns between ours): {bare_rate:8.1f} round trips/s"
    )
    print(
        f"  long-poll agent:         {long_poll:8.1f} requests/s ({REQUESTS} requests; turns "
        + ", ".join(f"{rate:.1f}" for rate in our_rates)
        + ")"
    )
    print(f"  1 s polling baseline:    {classic:8.1f} requests/s ({CLASSIC_REQUESTS} requests)")
    print(f"  ratio to bare: {ratio:.3f}; long-poll / 1 s polling: {long_poll / classic:.1f}x")
    print(f"  target >= {TARGET_RATIO:.2f} of the bare rate: {verdict(ratio >= TARGET_RATIO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
