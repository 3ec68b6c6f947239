"""Secret files in the state dir (bootstrap tokens): owner-only from the first byte.

A file is written to a temporary file in the same directory, created by `mkstemp` with
mode 0600 (`O_CREAT | O_EXCL`, so it is never group- or world-readable, whatever the
umask), flushed to disk, then renamed over the target: a reader sees the old file or the
complete new one, never a partial token. The directory entry is synced after the rename.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

SECRET_FILE_MODE = 0o600
STATE_DIR_MODE = 0o700


class LocalSecretFiles:
    """`application.server.ports.identity.SecretFiles` on the local filesystem."""

    def write_secret(self, path: Path, text: str) -> None:
        directory = path.parent
        if not directory.exists():
            directory.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), SECRET_FILE_MODE)  # mkstemp did; say it anyway
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        _sync_directory(directory)

    def read_secret(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None


def file_mode(path: Path) -> int:
    """The permission bits of `path` (tests and diagnostics)."""
    return stat.S_IMODE(path.stat().st_mode)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
