"""Fixtures for the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_terminal_size_from_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest-xdist's workers export COLUMNS=80 and LINES=24, and the CLI takes `$COLUMNS`
    as the terminal's width: every test sees the environment of a plain pipe instead,
    whichever way the suite runs (a test that needs a width sets its own)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
