"""Load for profiling: a real server and agent (`_stack.py`), CLIENTS clients sending
`SELECT 1` through the result stream for SECONDS; prints the server's and the agent's
CPU per request (from /proc), the figure that drifts least on a shared machine.

    .venv/bin/python bench/_load.py CLIENTS SECONDS [--spy PREFIX] [--sql FILE]

`--spy PREFIX` records py-spy raw profiles of both processes while the load runs, wall
clock and `--gil`, into PREFIX-server.txt, PREFIX-server-gil.txt, PREFIX-agent*.txt.
`--sql FILE` runs the server with every SQL statement, COMMIT and ROLLBACK appended to
FILE (one line each, prefixed by the thread), between `=== MARK` and `=== END` lines
around the measured load: statements and transactions per request come from counting
them. Not run by `make bench` (its name starts with `_`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _stack import DBWARD, Stack, submit, wait_result

#: Runs `dbward` with an SQLAlchemy listener writing each statement to $DBWARD_SQL_LOG.
_TRACED_DBWARD = """
import os, sys, threading
from sqlalchemy import event
from sqlalchemy.engine import Engine
out = open(os.environ["DBWARD_SQL_LOG"], "a", buffering=1)
lock = threading.Lock()
def write(text):
    with lock:
        out.write(f"{threading.get_ident() % 100000:05d} {text}\\n")
event.listen(Engine, "before_cursor_execute",
             lambda c, cur, statement, *a: write(" ".join(statement.split())[:160]))
event.listen(Engine, "commit", lambda c: write("COMMIT"))
event.listen(Engine, "rollback", lambda c: write("ROLLBACK"))
from entrypoints.cli import main
sys.argv[0] = "dbward"
sys.exit(main())
"""


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mark(path: str, line: str) -> None:
    with Path(path).open("a") as log:
        log.write(line + "\n")


class _TracedStack(Stack):
    def _spawn(self, argv: list[str], log_name: str) -> None:
        if argv[:2] == [DBWARD, "server"]:
            argv = [sys.executable, "-c", _TRACED_DBWARD, *argv[1:]]
        super()._spawn(argv, log_name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("clients", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--spy")
    parser.add_argument("--sql")
    args = parser.parse_args()
    if args.sql:
        os.environ["DBWARD_SQL_LOG"] = args.sql
    stack = _TracedStack() if args.sql else Stack()
    try:
        stack.start_server()
        stack.start_agent("load", max_concurrent_tasks=8, poll_wait_ms=20000)
        server, agent = stack.processes[0].pid, stack.processes[1].pid
        with stack.client() as client:
            for _ in range(20):  # warm up
                wait_result(client, submit(client))
        if args.sql:
            _mark(args.sql, "=== MARK")
        done = [0]
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def worker() -> None:
            with stack.client() as client:
                while time.monotonic() < stop:
                    wait_result(client, submit(client))
                    with lock:
                        done[0] += 1

        spies = []
        if args.spy:
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            for name, pid in (("server", server), ("agent", agent)):
                for gil in (False, True):
                    out = f"{args.spy}-{name}{'-gil' if gil else ''}.txt"
                    command = [py_spy, "record", "--pid", str(pid), "-r", "250", "-f", "raw"]
                    command += ["-o", out, "-d", str(int(args.seconds)), "--nonblocking"]
                    spies.append(subprocess.Popen([*command, *(["--gil"] if gil else [])]))
        cpu0 = (_cpu_secs(server), _cpu_secs(agent))
        started = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cpu1 = (_cpu_secs(server), _cpu_secs(agent))
        if args.sql:
            _mark(args.sql, "=== END")
        for spy in spies:
            spy.wait()
    finally:
        stack.stop()
    n = done[0]
    print(
        f"{n} requests in {elapsed:.1f} s = {n / elapsed:.1f}/s; "
        f"server CPU {1000 * (cpu1[0] - cpu0[0]) / n:.2f} ms/request "
        f"({(cpu1[0] - cpu0[0]) / elapsed:.2f} cores); "
        f"agent CPU {1000 * (cpu1[1] - cpu0[1]) / n:.2f} ms/request "
        f"({(cpu1[1] - cpu0[1]) / elapsed:.2f} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
