"""Key files on the local filesystem: owner-only, regular, read whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PrivateFileError", "read_private_file"]


class PrivateFileError(RuntimeError):
    """A key file that cannot be used; the message names the file and the fix."""


def read_private_file(path: Path, what: str) -> bytes:
    """The bytes of an owner-only regular file, else `PrivateFileError` naming the fix.

    A key file others may read is refused, not used: a leaked key lets anyone sign jobs
    that every agent runs, or open the secrets sealed in the store.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PrivateFileError(f"{path}: cannot open the {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PrivateFileError(f"{path}: the {what} must be a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PrivateFileError(
                f"{path}: the {what} is accessible to group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
            )
        return handle.read()
