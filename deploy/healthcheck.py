"""Container health of either program: the server's `GET /ready`, or the agent's readiness
file. Which one is read from the container's command line (`dbward server` / `dbward agent`).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

READY_URL = os.environ.get("DBWARD_HEALTHCHECK_URL", "http://127.0.0.1:3000/ready")
READY_FILE = Path(os.environ.get("DBWARD_READINESS_FILE", "/tmp/dbward-agent-ready"))  # noqa: S108


def main() -> int:
    command = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    if b"server" in command:
        try:
            with urllib.request.urlopen(READY_URL, timeout=2) as answer:  # noqa: S310
                return 0 if answer.status == 200 else 1
        except OSError:
            return 1
    return 0 if READY_FILE.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
