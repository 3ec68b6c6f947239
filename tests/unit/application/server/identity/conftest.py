from __future__ import annotations

import pytest

from tests.unit.application.server.identity.harness import Env


@pytest.fixture
def env() -> Env:
    return Env()
