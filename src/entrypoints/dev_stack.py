"""`make run`: the local development stack.

The server arrives with the server issue; until then this explains how to run the agent
against a server and checks the example configuration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from entrypoints.agent_command import check_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent.toml"


def main() -> int:
    print("dbward development stack")
    print("  The dbward server is not part of this build yet; `make run` will start it")
    print("  together with an agent once it is. Today you can run an agent against a")
    print("  dbward 0.2 server:")
    print()
    print(f"    DBWARD_AGENT_TOKEN=dbw_... dbward agent --config {EXAMPLE}")
    print()
    print("Checking the example agent configuration:")
    os.environ.setdefault("DBWARD_AGENT_TOKEN", "dbw_00000000000000000000000000000000")
    return check_config(EXAMPLE)


if __name__ == "__main__":
    sys.exit(main())
