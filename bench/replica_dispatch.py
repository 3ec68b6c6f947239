"""Dispatch across replicas: a request created on one server replica, claimed by an agent
long-polling another, both replicas sharing only a PostgreSQL store (docs/deploy.md).

Two real `dbward server` processes with their own state dirs on one fresh PostgreSQL
store, one `dbward agent` long-polling replica B. Requests go one at a time: created on
replica A (the held poll on B is woken by A's NOTIFY), then, as the baseline measured in
the same run, created on replica B itself (woken in process). Latency is the server's own
timestamps: the execution's `started_at` (the claim) minus the request's `created_at`.
Target: created on A, p50 <= 20 ms.
"""

from __future__ import annotations

import base64
import os
import sys

from _databases import fresh_postgres_database
from _stack import Stack, percentile, submit, verdict, wait_result
from dispatch_latency import claim_latency_ms

WARMUP = 10
REQUESTS = 100
TARGET_P50_MS = 20


def main() -> int:
    os.environ["DBWARD_KEY_ENCRYPTION_KEY"] = base64.b64encode(os.urandom(32)).decode()
    a, b = Stack(), Stack()
    with fresh_postgres_database() as store_url:
        try:
            a.start_server(store_url)
            b.start_server(store_url)
            b.start_agent("on-b", max_concurrent_tasks=8, poll_wait_ms=20000)
            with a.client() as on_a, b.client() as on_b:
                for client in (on_a, on_b) * (WARMUP // 2):
                    wait_result(client, submit(client))
                remote: list[float] = []
                local: list[float] = []
                for _ in range(REQUESTS):
                    for client, latencies in ((on_a, remote), (on_b, local)):
                        request_id = submit(client)
                        wait_result(client, request_id)
                        latencies.append(claim_latency_ms(on_b, request_id))
        finally:
            a.stop()
            b.stop()
    print("dispatch across replicas on one PostgreSQL store: request created -> claimed (ms)")
    for label, values in (("created on A, agent on B", remote), ("created on B (baseline)", local)):
        print(
            f"  {label:26} n={len(values):4}  p50={percentile(values, 0.5):7.1f}  "
            f"p99={percentile(values, 0.99):7.1f}"
        )
    p50 = percentile(remote, 0.5)
    print(f"  ratio A/B p50: {p50 / max(percentile(local, 0.5), 0.001):.2f}x")
    print(f"  target created on A p50 <= {TARGET_P50_MS} ms: {verdict(p50 <= TARGET_P50_MS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
