"""The agent protocol's use cases run on a real store (SQLite in tmp_path), wired as the
composition root wires them: `server` is a fresh `ServerHarness` per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.application.server.test_requests_and_claims import ServerHarness, build_harness


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerHarness]:
    harness = build_harness(tmp_path)
    yield harness
    harness.close()
