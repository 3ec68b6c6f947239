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


class BareApp:
    """The bare app, running: its round trips and rate can be measured in between a
    benchmark's own, so both come from the same minutes of a machine whose speed drifts.
    A context manager (it stops the app)."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen([sys.executable, "-c", _APP, str(port)])
        try:
            wait_until(lambda: _healthy(self.url), 30, "the bare FastAPI app")
            self._client = httpx.Client(base_url=self.url)
            for _ in range(50):  # warm up
                self._client.post("/echo", json=BODY)
        except BaseException:
            self.close()
            raise

    def round_trip(self) -> float:
        """One sequential round trip, in ms."""
        started = time.perf_counter()
        self._client.post("/echo", json=BODY).raise_for_status()
        return (time.perf_counter() - started) * 1000

    def rate(self, clients: int = RATE_CLIENTS, requests: int = RATE_REQUESTS) -> float:
        """Round trips per second with `clients` threads sending `requests` in all."""
        return _rate(self.url, clients, requests)

    def close(self) -> None:
        if hasattr(self, "_client"):
            self._client.close()
        self._process.terminate()
        self._process.wait(10)

    def __enter__(self) -> BareApp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def measure_bare(clients: int = RATE_CLIENTS) -> Bare:
    """Start the bare app, time sequential round trips and a threaded rate, stop it."""
    with BareApp() as app:
        trips = [app.round_trip() for _ in range(ROUND_TRIPS)]
        rate = app.rate(clients)
    return Bare(percentile(trips, 0.5), percentile(trips, 0.99), rate)


def _rate(url: str, clients: int, requests: int = RATE_REQUESTS) -> float:
    remaining = [requests]
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
    return requests / (time.perf_counter() - started)
