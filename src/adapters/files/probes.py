"""Liveness and readiness as files, for `test -f` exec probes and file watchers.

Liveness is refreshed (mtime) on every loop turn rather than created once, so a probe
that checks the file's age can tell a hung agent from a live one (docs/protocol.md
§16.14). Missing parent directories are not created: that is a configuration mistake,
reported by the caller as the OSError it is.
"""

from __future__ import annotations

import os
from pathlib import Path


def _touch(path: Path) -> None:
    """Create the file if needed and set its mtime to now."""
    with path.open("a"):
        pass
    os.utime(path, None)


class FileProbes:
    """Implements `application.agent.ports.ProbePort`."""

    def __init__(
        self, liveness_path: str | os.PathLike[str], readiness_path: str | os.PathLike[str]
    ) -> None:
        self._liveness = Path(liveness_path)
        self._readiness = Path(readiness_path)

    def mark_alive(self) -> None:
        _touch(self._liveness)

    def set_ready(self, ready: bool) -> None:
        if ready:
            _touch(self._readiness)
        else:
            self._readiness.unlink(missing_ok=True)

    def clear(self) -> None:
        self._liveness.unlink(missing_ok=True)
        self._readiness.unlink(missing_ok=True)
