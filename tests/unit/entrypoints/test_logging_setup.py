"""Process logging: the server's `[logging]` table, overridden by DBWARD_LOG_LEVEL/FORMAT."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from entrypoints.logging_setup import JsonFormatter, configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _root() -> tuple[int, bool]:
    root = logging.getLogger()
    (handler,) = root.handlers
    return root.level, isinstance(handler.formatter, JsonFormatter)


def test_defaults_are_info_and_text() -> None:
    configure_logging({})
    assert _root() == (logging.INFO, False)


def test_the_callers_level_and_format_apply() -> None:
    configure_logging({}, level="debug", log_format="json")
    assert _root() == (logging.DEBUG, True)


def test_the_environment_overrides_them() -> None:
    environ = {"DBWARD_LOG_LEVEL": "warning", "DBWARD_LOG_FORMAT": "text"}
    configure_logging(environ, level="debug", log_format="json")
    assert _root() == (logging.WARNING, False)
