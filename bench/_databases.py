"""A fresh PostgreSQL database for one benchmark run, dropped when the run ends.

The server comes from DBWARD_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test). Nothing has to exist there beforehand: the
database is created from the URL's own database, or from the `postgres` maintenance
database when the URL's one does not exist yet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

POSTGRES_URL = os.environ.get(
    "DBWARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CONNECT_TIMEOUT_SECS = 10


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def admin_connection(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection able to run CREATE DATABASE and DROP DATABASE."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECS)
    except psycopg.OperationalError as first:
        try:
            return psycopg.connect(
                with_database(url, "postgres"),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECS,
            )
        except psycopg.OperationalError:
            raise first from None


@contextmanager
def fresh_postgres_database(url: str = POSTGRES_URL) -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (even with sessions still open)."""
    name = f"dbward_bench_{uuid.uuid4().hex[:12]}"
    with admin_connection(url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(url, name)
    finally:
        with admin_connection(url) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
