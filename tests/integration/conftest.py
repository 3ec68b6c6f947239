"""Real databases for the integration suite.

`postgres_url` and `mysql_url` come from DBWARD_TEST_POSTGRES_URL and DBWARD_TEST_MYSQL_URL
(`make test` sets them to the local services); without them, where Docker runs, from
containers started with testcontainers for the session (see `tests/integration/databases.py`).
Without a database a test is skipped on a developer machine, and fails under CI=true: CI
never passes by skipping.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymysql
import pytest

from tests.integration.databases import MYSQL, POSTGRES, database_url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with database_url(POSTGRES) as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    with database_url(MYSQL) as url:
        yield url


def _with_path(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = f"dbward_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_path(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mysql_database(mysql_url: str) -> Iterator[str]:
    """A fresh, empty MySQL/MariaDB database for one test; dropped afterwards."""
    name = f"dbward_t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(mysql_url)
    params = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
        "autocommit": True,
    }
    admin = pymysql.connect(**params)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
    finally:
        admin.close()
    try:
        yield _with_path(mysql_url, name)
    finally:
        admin = pymysql.connect(**params)
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()
