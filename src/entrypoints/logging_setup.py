"""Process logging: compact text for terminals and journald, JSON lines for log shippers.

`DBWARD_LOG_FORMAT=json` selects JSON; `DBWARD_LOG_LEVEL` (default `info`) the level. Both
override the `level` and `log_format` a caller passes (the server's `[logging]` table).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
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
    if environ.get("DBWARD_LOG_FORMAT", log_format).lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_number)
    logging.getLogger("httpx").setLevel(max(level_number, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level_number, logging.WARNING))
