"""Readiness: a store that answers is ready; one that raises is not, and says why in the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import pytest

from application.server.ports.store import Store
from application.server.readiness import StoreReadiness
from tests.fakes.identity_store import FakeStore


class UnreachableStore:
    @contextmanager
    def read(self) -> Iterator[object]:
        raise ConnectionError("connection refused")
        yield  # pragma: no cover


def test_a_store_that_answers_is_ready() -> None:
    assert StoreReadiness(cast(Store, FakeStore())).store_ready()


def test_a_store_that_raises_is_not_ready_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dbward.server.readiness"):
        assert not StoreReadiness(cast(Store, UnreachableStore())).store_ready()
    assert "store readiness check failed" in caplog.text
