"""Chooses the database adapter for a configured URL by its scheme.

Each engine's adapter is imported only when a URL of its scheme is opened, so an agent that
serves only PostgreSQL never loads PyMySQL and the other way round. The imports are plain
statements inside small functions, so mypy checks what they return and import-linter sees
the dependency on the adapter.
"""

from __future__ import annotations

from collections.abc import Callable

from application.agent.ports import DatabasePort
from domain.shared.errors import ConfigError

#: Opens one database from its URL.
Opener = Callable[[str], DatabasePort]


def postgres_driver() -> Opener:
    """The PostgreSQL adapter (psycopg 3), imported on first use."""
    from adapters.postgres.database import PostgresDatabase  # noqa: PLC0415

    return PostgresDatabase


def mysql_driver() -> Opener:
    """The MySQL/MariaDB adapter (PyMySQL), imported on first use."""
    from adapters.mysql.database import MySqlDatabase  # noqa: PLC0415

    return MySqlDatabase


#: scheme -> the function importing the adapter that implements DatabasePort.
DRIVERS: dict[str, Callable[[], Opener]] = {
    "postgres": postgres_driver,
    "postgresql": postgres_driver,
    "mysql": mysql_driver,
}


def open_database(url: str) -> DatabasePort:
    scheme = url.split("://", 1)[0].lower()
    driver = DRIVERS.get(scheme)
    if driver is None:
        raise ConfigError(
            f"unsupported database URL scheme {scheme!r}: use postgres://, postgresql:// or mysql://"
        )
    try:
        adapter = driver()
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the {scheme} driver is not available: {exc}") from None
    return adapter(url)
