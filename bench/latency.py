"""Idle latency: `POST /api/requests` of `SELECT 1` to the result in the client's hands.

Real `dbward server` (SQLite store) and one idle `dbward agent` (long-poll, 8 slots) on
loopback, a real PostgreSQL behind the agent. One client submits a request, waits for its
result through the result stream (as `dbward execute` does), and only then submits the
next. Beside it, the same run's bare FastAPI + uvicorn round trip (`_bare.py`), same
client, measured in turns with ours (after every `BLOCK` requests, `BARE_BLOCK` bare round
trips back to back, the first few of each turn discarded as warm-up), so that both medians
come from the same minutes of a machine whose speed drifts: the figure that matters is the
ratio, "how many bare round trips is one request".

Per-phase breakdown of a request, from what the bench can observe:

* create: the client's `POST /api/requests` round trip;
* dispatch (wake + claim): the execution's `started_at` minus the request's `created_at`,
  both server clock. Our agent's polls ask for their jobs claimed (docs/protocol.md §3.2
  step 9), so the held poll wakes, claims and only then answers: `started_at` is stamped
  before the answer leaves, and there are no claim calls to time;
* execute + result submit: the execution's `finished_at` minus its `started_at` (the
  claim's answer reaches the agent, which runs the statement and posts the result; the
  server stamps `finished_at` while storing it); the result route's own server time
  comes from `/metrics`;
* client read: the client's clock when the result arrived minus `finished_at` (the
  stream wakes and answers; same machine, same clock).

Targets: idle p50 <= 15 bare round trips; dispatch p50 <= 10 ms and p99 <= 25 ms.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime

import httpx
from _bare import BareApp
from _stack import (
    Stack,
    mean_ms_between,
    percentile,
    route_totals,
    submit,
    verdict,
    wait_result,
)

WARMUP = 20
REQUESTS = 300
#: Our requests per turn, and the bare round trips after each (the first `BARE_WARMUP`
#: of them not counted: the bare app has been idle meanwhile).
BLOCK = 25
BARE_BLOCK = 40
BARE_WARMUP = 5
TARGET_BARE_TRIPS = 15
TARGET_DISPATCH_P50_MS = 10
TARGET_DISPATCH_P99_MS = 25


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def one_request(client: httpx.Client) -> dict[str, float]:
    started = time.time()
    request_id = submit(client)
    created = time.time()
    wait_result(client, request_id)
    done = time.time()
    request = client.get(f"/api/requests/{request_id}").json()
    execution = client.get(f"/api/requests/{request_id}/executions").json()["executions"][0]
    created_at = _epoch(request["created_at"])
    claimed_at = _epoch(execution["started_at"])
    finished_at = _epoch(execution["finished_at"])
    return {
        "total": (done - started) * 1000,
        "create": (created - started) * 1000,
        "dispatch": (claimed_at - created_at) * 1000,
        "execute + submit": (finished_at - claimed_at) * 1000,
        "client read": (done - finished_at) * 1000,
    }


def main() -> int:
    runs: list[dict[str, float]] = []
    trips: list[float] = []
    with BareApp() as bare:
        stack = Stack()
        try:
            stack.start_server()
            stack.start_agent("idle", max_concurrent_tasks=8, poll_wait_ms=20000)
            with stack.client() as client:
                for _ in range(WARMUP):
                    one_request(client)
                before = route_totals(client)
                for _ in range(REQUESTS // BLOCK):
                    runs.extend(one_request(client) for _ in range(BLOCK))
                    turn = [bare.round_trip() for _ in range(BARE_WARMUP + BARE_BLOCK)]
                    trips.extend(turn[BARE_WARMUP:])
                after = route_totals(client)
        finally:
            stack.stop()
    bare_p50, bare_p99 = percentile(trips, 0.5), percentile(trips, 0.99)
    server_ms = {
        "create": mean_ms_between(before, after, "POST", "/api/requests"),
        "claim": mean_ms_between(before, after, "POST", "/api/agent/jobs/{request_id}/claim"),
        "result": mean_ms_between(before, after, "POST", "/api/agent/jobs/{execution_id}/result"),
    }
    claim_route = ("POST", "/api/agent/jobs/{request_id}/claim")
    claim_calls = after.get(claim_route, (0.0, 0.0))[1] - before.get(claim_route, (0.0, 0.0))[1]
    total = [run["total"] for run in runs]
    dispatch = [run["dispatch"] for run in runs]
    p50 = percentile(total, 0.5)
    ratio = p50 / bare_p50
    print(f"idle latency, SELECT 1 submit -> result in hand, {REQUESTS} requests one at a time")
    print(
        f"  bare FastAPI round trip (same run, in turns with ours): "
        f"p50={bare_p50:.2f} ms  p99={bare_p99:.2f} ms"
    )
    print(
        f"  dbward: p50={p50:.1f} ms  p99={percentile(total, 0.99):.1f} ms  "
        f"mean={statistics.fmean(total):.1f} ms  = {ratio:.1f} bare round trips (p50)"
    )
    print("  phases (ms)                 p50      p99     mean")
    for phase in ("create", "dispatch", "execute + submit", "client read"):
        values = [run[phase] for run in runs]
        print(
            f"    {phase:22} {percentile(values, 0.5):7.2f}  {percentile(values, 0.99):7.2f}  "
            f"{statistics.fmean(values):7.2f}"
        )
    claim = f"claim {server_ms['claim']:.2f}" if claim_calls else "claim: none (made with the poll)"
    print(
        f"  server time per call (mean ms, /metrics): create {server_ms['create']:.2f}, "
        f"{claim}, result {server_ms['result']:.2f}"
    )
    print(
        f"  target p50 <= {TARGET_BARE_TRIPS} bare round trips: "
        f"{verdict(ratio <= TARGET_BARE_TRIPS)}"
    )
    d50, d99 = percentile(dispatch, 0.5), percentile(dispatch, 0.99)
    print(
        f"  target dispatch p50 <= {TARGET_DISPATCH_P50_MS} ms ({d50:.1f}) and p99 <= "
        f"{TARGET_DISPATCH_P99_MS} ms ({d99:.1f}): "
        f"{verdict(d50 <= TARGET_DISPATCH_P50_MS and d99 <= TARGET_DISPATCH_P99_MS)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
