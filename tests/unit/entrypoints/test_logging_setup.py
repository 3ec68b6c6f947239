"""Process logging: the server's `[logging]` table, overridden by DBWARD_LOG_LEVEL/FORMAT, and
the request, execution and job ids on every line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from application.log_context import bound_ids
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


def _emit(capsys: pytest.CaptureFixture[str], message: str) -> str:
    logging.getLogger("dbward.test").info(message)
    return capsys.readouterr().err


def test_json_lines_carry_the_bound_ids_as_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging({}, log_format="json")
    with bound_ids(request_id="r-1", execution_id="e-1"):
        inside = orjson.loads(_emit(capsys, "about r-1"))
    outside = orjson.loads(_emit(capsys, "about nothing"))
    assert (inside["request_id"], inside["execution_id"]) == ("r-1", "e-1")
    assert inside["message"] == "about r-1"
    assert "request_id" not in outside


def test_text_lines_append_the_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging({}, log_format="text")
    with bound_ids(job_id="j-1", request_id="j-1"):
        line = _emit(capsys, "claimed")
    assert line.rstrip().endswith("dbward.test: claimed [request_id=j-1 job_id=j-1]")
    assert "[" not in _emit(capsys, "idle")


def test_text_ids_go_on_the_first_line_above_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging({}, log_format="text")
    with bound_ids(request_id="r-2"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("dbward.test").exception("failed")
    first, *rest = capsys.readouterr().err.splitlines()
    assert first.endswith("failed [request_id=r-2]")
    assert rest[-1] == "RuntimeError: boom"
