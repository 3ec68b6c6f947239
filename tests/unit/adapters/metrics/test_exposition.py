"""The unauthenticated metrics listener: serves its registry over plain HTTP, then stops."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from adapters.metrics.exposition import MetricsListener
from domain.shared.listen import ListenAddress


def test_the_listener_serves_its_registry_until_stopped() -> None:
    registry = CollectorRegistry()
    Counter("dbward_test_things", "things", registry=registry).inc(3)
    listener = MetricsListener.start(ListenAddress("127.0.0.1", 0), registry)
    url = f"http://127.0.0.1:{listener.port}/metrics"
    try:
        reply = httpx.get(url, timeout=5)
        assert reply.status_code == 200
        assert "dbward_test_things_total 3.0" in reply.text
    finally:
        listener.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_a_taken_port_is_an_os_error() -> None:
    registry = CollectorRegistry()
    first = MetricsListener.start(ListenAddress("127.0.0.1", 0), registry)
    try:
        with pytest.raises(OSError):
            MetricsListener.start(ListenAddress("127.0.0.1", first.port), registry)
    finally:
        first.stop()
