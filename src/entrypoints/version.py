"""The installed dbward package's version, reported by every program and the CLI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("dbward")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+source"
