"""`host:port` listen addresses: the one parser behind every listen key and `--listen`."""

from __future__ import annotations

import pytest

from domain.shared.listen import ListenAddress, parse_listen


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:3000", "127.0.0.1", 3000), ("[::1]:9464", "::1", 9464), ("db-1:1", "db-1", 1)],
)
def test_valid_addresses_parse_and_print_back(text: str, host: str, port: int) -> None:
    address = parse_listen(text)
    assert address == ListenAddress(host, port)
    assert str(address) == text


@pytest.mark.parametrize(
    "text", ["3000", ":3000", "host:", "host:0", "host:65536", "::1:3000", "h:x", "h:٣"]
)
def test_malformed_addresses_are_none(text: str) -> None:
    assert parse_listen(text) is None
