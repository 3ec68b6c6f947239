"""The backends every contract suite runs on: the hand-written fake, SQLite and PostgreSQL.

Each SQL backend is one migrated database for the whole run, and every test works inside
one transaction that is rolled back when it ends: each test starts from empty tables, and
a database is created once instead of once per test. PostgreSQL comes from the
integration suite's `postgres_url` fixture, under its rules: without a database the
PostgreSQL cases are skipped, and under CI=true they fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from tests.integration.conftest import postgres_url  # noqa: F401  (a fixture, used by name)

BACKENDS = [
    pytest.param("fake"),
    pytest.param("sqlite", marks=pytest.mark.integration),
    pytest.param("postgresql", marks=pytest.mark.integration),
]


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_store_engine(f"sqlite:///{tmp_path_factory.mktemp('store') / 'dbward.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgresql_store(postgres_url: str) -> Iterator[Engine]:  # noqa: F811  (the fixture)
    name = f"dbward_contract_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_store_engine(make_url(postgres_url).set(database=name).render_as_string(False))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def store_engine(request: pytest.FixtureRequest) -> Engine | None:
    """The real store's engine, or None for the fake."""
    if request.param == "fake":
        return None
    engine: Engine = request.getfixturevalue(f"{request.param}_store")
    return engine


@pytest.fixture(params=BACKENDS[1:])
def sql_store_engine(request: pytest.FixtureRequest) -> Engine:
    """A real store's engine only: for races between two connections, which a fake has not."""
    engine: Engine = request.getfixturevalue(f"{request.param}_store")
    return engine


@contextmanager
def rolled_back(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that rolls back when the block ends."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()


@pytest.fixture
def connection(store_engine: Engine | None) -> Iterator[Connection | None]:
    """A connection inside a transaction that rolls back after the test (None for the fake)."""
    if store_engine is None:
        yield None
        return
    with rolled_back(store_engine) as conn:
        yield conn
