"""The bare baseline: a tiny FastAPI + uvicorn app answering a small JSON POST.

Started by each benchmark in its own run, as a subprocess with the same uvicorn defaults
the server uses (uvloop and httptools when installed), and measured with the same httpx
client settings the benchmarks use against dbward. Its round trip and its rate are the
floor every dbward figure is divided by: "45 ms" means little on its own, "70 bare round
trips" says how much of it is ours.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
from _stack import free_port, percentile, wait_until

_APP = """
import sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()

@app.post("/echo")
async def echo(body: dict) -> dict:
    return {"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "status": "approved", "echo": body}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

ROUND_TRIPS = 500
RATE_CLIENTS = 8
RATE_REQUESTS = 2000
BODY = {
    "database": "app",
    "environment": "bench",
    "operation": "execute_select",
    "detail": "SELECT 1",
}


@dataclass(frozen=True)
class Bare:
    """The same run's bare FastAPI figures."""

    p50_ms: float
    p99_ms: float
    rate: float


def _healthy(url: str) -> bool:
    try:
        return httpx.post(f"{url}/echo", json=BODY, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def measure_bare(clients: int = RATE_CLIENTS) -> Bare:
    """Start the bare app, time sequential round trips and a threaded rate, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-c", _APP, str(port)])
    try:
        wait_until(lambda: _healthy(url), 30, "the bare FastAPI app")
        with httpx.Client(base_url=url) as client:
            for _ in range(50):  # warm up
                client.post("/echo", json=BODY)
            trips: list[float] = []
            for _ in range(ROUND_TRIPS):
                started = time.perf_counter()
                client.post("/echo", json=BODY).raise_for_status()
                trips.append((time.perf_counter() - started) * 1000)
        rate = _rate(url, clients)
    finally:
        process.terminate()
        process.wait(10)
    return Bare(percentile(trips, 0.5), percentile(trips, 0.99), rate)


def _rate(url: str, clients: int) -> float:
    remaining = [RATE_REQUESTS]
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url) as client:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                client.post("/echo", json=BODY).raise_for_status()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return RATE_REQUESTS / (time.perf_counter() - started)
