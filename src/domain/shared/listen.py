"""`host:port` listen addresses, as the server's `listen`, its `[metrics] listen` and the
agent's `metrics_listen` spell them (docs/server.md §3, docs/agent.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LISTEN_EXAMPLE", "ListenAddress", "parse_listen"]

#: How an error message shows the expected form.
LISTEN_EXAMPLE = '"host:port" such as "127.0.0.1:3000" or "[::1]:3000"'


@dataclass(frozen=True)
class ListenAddress:
    #: Brackets of an IPv6 address removed: what a socket bind takes.
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> ListenAddress | None:
    """The address, or None when `value` is not `host:port` with a port in 1..65535 (an
    IPv6 host needs brackets, so the port is never ambiguous)."""
    host, sep, port = value.rpartition(":")
    bare = host.removeprefix("[").removesuffix("]")
    if not (sep and bare and port.isascii() and port.isdigit()):
        return None
    if ":" in bare and not (host.startswith("[") and host.endswith("]")):
        return None
    number = int(port)
    return ListenAddress(bare, number) if 1 <= number <= 65535 else None
