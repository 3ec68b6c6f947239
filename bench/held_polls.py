"""Held long-polls: 500 idle agents holding polls while a real agent's dispatch is timed.

Real `dbward server` (SQLite store) and one real `dbward agent` (8 slots, long-poll) on
loopback, a real PostgreSQL behind it. Dispatch latency (the execution's `started_at`
minus the request's `created_at`, server clock) of requests sent one at a time is
measured twice in the same run: alone, then while 500 more agents hold long-polls. Those
500 are plain HTTP clients speaking the poll protocol on one asyncio httpx client (not 500
processes): distinct `agent_id`s spread over 5 agent tokens (agents are keyed by token
subject and `agent_id`), each polling with `wait_ms = 60000` for a database nobody sends
work to, and polling again as soon as a hold ends, as an idle agent does.

Target: dispatch p99 with the held polls within 1.5x of the p99 without. Also printed: the
server's RSS growth per held poll (from /proc, same machine).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import httpx
from _stack import Stack, percentile, verdict
from dispatch_latency import dispatch_latencies

HELD = 500
TOKENS = 5
REQUESTS = 300
TARGET_P99_RATIO = 1.5
HOLD_MS = 60_000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def agent_tokens(stack: Stack, count: int) -> list[str]:
    with stack.client() as client:
        return [
            client.post(
                "/api/tokens",
                json={"subject_id": f"held-agents-{n}", "subject_type": "agent"},
            )
            .raise_for_status()
            .json()["token"]
            for n in range(count)
        ]


class HeldPolls:
    """The idle agents, on an event loop of their own thread."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.tokens = tokens
        self.holding = 0
        self.errors: list[BaseException] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        limits = httpx.Limits(max_connections=HELD + 10, max_keepalive_connections=HELD + 10)
        timeout = httpx.Timeout(30, read=HOLD_MS / 1000 + 30)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout) as client:
            tasks = [asyncio.create_task(self._agent(client, n)) for n in range(HELD)]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _agent(self, client: httpx.AsyncClient, n: int) -> None:
        token = self.tokens[n % len(self.tokens)]
        body = {
            "agent_id": f"held-{n}",
            "capabilities": {
                "scopes": [{"database": "idle", "environment": "bench"}],
                "operations": ["execute_select"],
            },
            "status": {"in_flight": 0, "in_flight_preflight": 0, "max_concurrent": 4},
            "agent_version": "0.3.0",
            "wait_ms": HOLD_MS,
        }
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            self.holding += 1
            try:
                response = await client.post("/api/agent/poll", json=body, headers=headers)
                response.raise_for_status()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.errors.append(exc)
                await asyncio.sleep(1)
            finally:
                self.holding -= 1


def main() -> int:
    stack = Stack()
    try:
        stack.start_server()
        server_pid = stack.processes[0].pid
        stack.start_agent("real", max_concurrent_tasks=8, poll_wait_ms=20000)
        dispatch_latencies(stack, 20)  # warm up
        alone = dispatch_latencies(stack, REQUESTS)
        tokens = agent_tokens(stack, TOKENS)
        rss_before = rss_kib(server_pid)
        held = HeldPolls(stack.url, tokens)
        held.start()
        deadline = time.monotonic() + 60
        while held.holding < HELD and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # every poll registered and held
        rss_held = rss_kib(server_pid)
        loaded = dispatch_latencies(stack, REQUESTS)
        holding = held.holding
        held.stop()
    finally:
        stack.stop()
    if held.errors:
        print(f"  {len(held.errors)} held-poll errors, first: {held.errors[0]!r}")
    p99_alone, p99_loaded = percentile(alone, 0.99), percentile(loaded, 0.99)
    ratio = p99_loaded / max(p99_alone, 0.001)
    print(f"held long-polls: dispatch latency with {HELD} idle agents holding polls (ms)")
    for label, values in (("alone", alone), (f"with {holding} held polls", loaded)):
        print(
            f"  {label:26} n={len(values):4}  p50={percentile(values, 0.5):7.1f}  "
            f"p99={percentile(values, 0.99):7.1f}"
        )
    print(
        f"  server RSS: {rss_before / 1024:.1f} MiB -> {rss_held / 1024:.1f} MiB, "
        f"{(rss_held - rss_before) / max(holding, 1):.1f} KiB per held poll"
    )
    print(
        f"  target p99 within {TARGET_P99_RATIO}x of alone ({ratio:.2f}x): "
        f"{verdict(ratio <= TARGET_P99_RATIO)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
