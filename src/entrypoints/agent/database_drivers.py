"""Chooses the database adapter for a configured URL by its scheme."""

from __future__ import annotations

import importlib

from application.agent.ports import DatabasePort
from domain.shared.errors import ConfigError

#: scheme -> "module:Class" of the adapter implementing DatabasePort.
DRIVERS = {
    "postgres": "adapters.postgres.database:PostgresDatabase",
    "postgresql": "adapters.postgres.database:PostgresDatabase",
    "mysql": "adapters.mysql.database:MySqlDatabase",
}


def open_database(url: str) -> DatabasePort:
    scheme = url.split("://", 1)[0].lower()
    target = DRIVERS.get(scheme)
    if target is None:
        raise ConfigError(
            f"unsupported database URL scheme {scheme!r}: use postgres://, postgresql:// or mysql://"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the {scheme} driver is not available: {exc}") from None
    adapter: DatabasePort = getattr(module, class_name)(url)
    return adapter
