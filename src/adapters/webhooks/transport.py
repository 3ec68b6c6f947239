"""`WebhookTransport` over httpx, with the SSRF guard at send time.

A URL that passed the config check can still lead somewhere private: its name may resolve
to a private address now, or resolve to a public one for our check and a private one for
the connection (DNS rebinding). So, unless `allow_private_networks` is set, each send
resolves the host once, refuses when any address is private, loopback, link-local or
otherwise not public (`domain.server.webhooks.is_private_address`), and connects to the
checked address itself: the URL's host is replaced by it, while the `Host` header and
the TLS server name (SNI and certificate check) keep the name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from domain.server.webhooks import AttemptResult, is_private_address

__all__ = ["HttpxWebhookTransport", "Resolver", "system_resolver"]

#: `host, port` → the addresses it resolves to.
Resolver = Callable[[str, int], Sequence[str]]
#: Error texts are kept short: they are stored on the delivery row.
_ERROR_CHARS = 300


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpxWebhookTransport:
    def __init__(
        self,
        *,
        timeout_secs: float,
        allow_private_networks: bool,
        resolver: Resolver = system_resolver,
        user_agent: str = "dbward-webhooks",
    ) -> None:
        self._allow_private = allow_private_networks
        self._resolver = resolver
        self._client = httpx.Client(
            timeout=timeout_secs,
            follow_redirects=False,
            headers={"User-Agent": user_agent},
            trust_env=False,
        )

    def send(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        target = url
        extensions: dict[str, str] = {}
        request_headers = dict(headers)
        if not self._allow_private:
            pinned = self._pin(url)
            if isinstance(pinned, AttemptResult):
                return pinned
            target, host = pinned
            request_headers["Host"] = _host_header(url)
            if urlsplit(url).scheme == "https":
                extensions["sni_hostname"] = host
        try:
            response = self._client.post(
                target, content=body.encode(), headers=request_headers, extensions=extensions
            )
        except httpx.HTTPError as failure:
            return AttemptResult(error=f"{type(failure).__name__}: {failure}"[:_ERROR_CHARS])
        problem = None if response.is_success else f"HTTP {response.status_code}"
        return AttemptResult(status_code=response.status_code, error=problem)

    def _pin(self, url: str) -> tuple[str, str] | AttemptResult:
        """(the URL with its host replaced by a checked address, the host name), or the
        refusal."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(a) for a in self._resolver(host, port)]
        except (OSError, ValueError) as error:
            return AttemptResult(error=f"cannot resolve {host}: {error}"[:_ERROR_CHARS])
        if not addresses:
            return AttemptResult(error=f"cannot resolve {host}: no addresses")
        private = [str(a) for a in addresses if is_private_address(a)]
        if private:
            return AttemptResult(
                error=f"{host} resolves to a non-public address ({', '.join(private)}); "
                "set allow_private_networks = true to allow it",
                refused=True,
            )
        address = addresses[0]
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        return urlunsplit(parts._replace(netloc=netloc)), host

    def close(self) -> None:
        self._client.close()


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2]
