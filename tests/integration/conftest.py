"""Real databases for the integration suite.

URLs come from DBWARD_TEST_POSTGRES_URL and DBWARD_TEST_MYSQL_URL (`make test` sets them to
the local services). Without a reachable database a test is skipped on a developer
machine, and fails under CI=true: CI never passes by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymysql
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (CI=true: a missing database fails the run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("DBWARD_TEST_POSTGRES_URL")
    if not url:
        _unavailable("DBWARD_TEST_POSTGRES_URL is not set")
        raise AssertionError("unreachable")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {url} is not reachable: {exc}")
    return url


@pytest.fixture(scope="session")
def mysql_url() -> str:
    url = os.environ.get("DBWARD_TEST_MYSQL_URL")
    if not url:
        _unavailable("DBWARD_TEST_MYSQL_URL is not set")
        raise AssertionError("unreachable")
    parts = urlsplit(url)
    try:
        pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/") or None,
            connect_timeout=5,
        ).close()
    except pymysql.Error as exc:
        _unavailable(f"MySQL at {url} is not reachable: {exc}")
    return url


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
