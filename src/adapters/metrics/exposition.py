"""Rendering a registry, and the optional unauthenticated listener that serves it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import start_http_server

from domain.shared.listen import ListenAddress

__all__ = ["MetricsListener", "RegistryExposition"]


class RegistryExposition:
    """`MetricsExposition` of one registry, in the Prometheus text format."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


@dataclass
class MetricsListener:
    """A plain-HTTP listener on its own thread serving `registry` at any path, without
    authentication: bind it to a private interface."""

    server: WSGIServer
    thread: threading.Thread

    @classmethod
    def start(cls, address: ListenAddress, registry: CollectorRegistry) -> MetricsListener:
        """Raises `OSError` when the address cannot be bound."""
        server, thread = start_http_server(address.port, address.host, registry=registry)
        return cls(server, thread)

    @property
    def port(self) -> int:
        """The bound port (the real one when the address asked for port 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
