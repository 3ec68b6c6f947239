"""Process logging: compact text for terminals and journald, JSON lines for log shippers.

`DBWARD_LOG_FORMAT=json` selects JSON; `DBWARD_LOG_LEVEL` (default `info`) the level. Both
override the `level` and `log_format` a caller passes (the server's `[logging]` table, the
agent's `log_format`). The request, execution and job ids bound in `application.log_context`
ride on every line: JSON fields, or `key=value` after a text message (docs/operations.md).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from application.log_context import LOG_ID_FIELDS, current_ids


class LogIds(logging.Filter):
    """Copies the ids bound where the record was made onto it (`record.log_ids`), so every
    formatter reads them from the record alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.log_ids = dict(current_ids())
        return True


def _ids(record: logging.LogRecord) -> dict[str, str]:
    ids = getattr(record, "log_ids", None)
    return ids if isinstance(ids, dict) else {}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _ids(record)
        suffix = " ".join(f"{name}={ids[name]}" for name in LOG_ID_FIELDS if name in ids)
        if not suffix:
            return text
        # After the message's first line, so a traceback below it stays intact.
        first, newline, rest = text.partition("\n")
        return f"{first} [{suffix}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
            **_ids(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(
    environ: Mapping[str, str], *, level: str = "info", log_format: str = "text"
) -> None:
    level_name = environ.get("DBWARD_LOG_LEVEL", level).upper()
    level_number = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(LogIds())
    if environ.get("DBWARD_LOG_FORMAT", log_format).lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number)
    logging.getLogger("httpx").setLevel(max(level_number, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level_number, logging.WARNING))
