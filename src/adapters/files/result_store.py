"""Result bodies on the local filesystem (`[result_storage] backend = "local"`).

One file per key under `root_dir`; the server uses `<request_id>/<execution_id>/<attempt>`,
so concurrent submissions of one result never share a file. A write goes
to a temporary file in the same directory, is fsynced, then renamed over the target, so
a reader (or a crash) sees the old content or the new one, never half a result.
Directories are 0700 and files 0600: results hold production data.

Keys are checked segment by segment (no empty, `.`, `..` or separator-bearing segments),
so a key can never name a file outside `root_dir`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from application.server.ports.services import ResultContentTooLarge

__all__ = ["LocalResultStore"]

_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class LocalResultStore:
    """Implements `application.server.ports.services.ResultContentStore`."""

    def __init__(self, root_dir: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._root = root_dir
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def root_dir(self) -> Path:
        return self._root

    def kept_in_store(self, size: int) -> bool:
        return False

    def put(self, key: str, content: bytes) -> None:
        if len(content) > self._max_bytes:
            raise ResultContentTooLarge(
                f"result size {len(content)} exceeds limit {self._max_bytes}"
            )
        target = self._path(key)
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        _fsync_dir(target.parent)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """Delete the file, then its directories that are left empty (up to `root_dir`),
        so a purged request leaves no trace under `root_dir`."""
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        for directory in path.parents:
            if directory == self._root or self._root not in directory.parents:
                break
            try:
                directory.rmdir()  # only when empty
            except OSError:
                break

    def _path(self, key: str) -> Path:
        segments = key.split("/")
        for segment in segments:
            if segment in ("", ".", "..") or not set(segment) <= _ALLOWED:
                raise ValueError(f"invalid result key {key!r}")
        return self._root.joinpath(*segments)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
