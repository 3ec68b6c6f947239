"""The send-time SSRF guard: every resolved address is checked before any connection."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapters.webhooks.transport import HttpxWebhookTransport, Resolver


def resolving_to(*addresses: str) -> Resolver:
    def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


@pytest.mark.parametrize(
    "addresses",
    [("127.0.0.1",), ("93.184.216.34", "10.0.0.7"), ("169.254.169.254",), ("::1",)],
)
def test_a_name_resolving_to_any_private_address_is_refused_without_a_retry(
    addresses: tuple[str, ...],
) -> None:
    transport = HttpxWebhookTransport(
        timeout_secs=1,
        allow_private_networks=False,
        resolver=resolving_to(*addresses),
    )
    result = transport.send("https://hooks.example.com/x", "{}", {})
    transport.close()
    assert result.refused
    assert not result.retryable
    assert result.error is not None and "allow_private_networks" in result.error


def test_a_name_that_does_not_resolve_is_an_error_worth_retrying() -> None:
    def fail(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    transport = HttpxWebhookTransport(timeout_secs=1, allow_private_networks=False, resolver=fail)
    result = transport.send("https://nowhere.example.com/x", "{}", {})
    transport.close()
    assert result.retryable
    assert result.error == "cannot resolve nowhere.example.com: Name or service not known"
