"""The work store under contract: `FakeWorkRepository` or `SqlWorkRepository`."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from adapters.store.work import SqlWorkRepository
from application.server.ports.work import WorkRepository
from tests.fakes.work_store import FakeWorkRepository


@pytest.fixture
def work(connection: Connection | None) -> WorkRepository:
    if connection is None:
        return FakeWorkRepository()
    return SqlWorkRepository(connection)
