"""`dbward server` start-up: owner-only files in the state dir (umask 077), `[logging]`."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from entrypoints.logging_setup import JsonFormatter
from entrypoints.server import command
from entrypoints.server.command import prepare_state_dir


@pytest.fixture(autouse=True)
def restore_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_files_are_owner_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    os.umask(0o022)  # a typical login umask: files would be 0644
    state_dir = tmp_path / "state"
    with caplog.at_level(logging.WARNING, logger="dbward.server"):
        prepare_state_dir(state_dir)
    assert _mode(state_dir) == 0o700
    assert not caplog.records
    engine = create_store_engine(f"sqlite:///{state_dir / 'dbward.db'}")
    try:
        migrate(engine)
        files = [path for path in state_dir.iterdir() if path.is_file()]
        assert {path.name for path in files} >= {"dbward.db", "dbward.db-wal"}
        assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}
    finally:
        engine.dispose()


def test_an_open_state_dir_is_warned_about_not_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "shared"
    state_dir.mkdir()
    state_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="dbward.server"):
        prepare_state_dir(state_dir)
    assert _mode(state_dir) == 0o755  # the user's directory: not chmodded
    assert any("accessible to group or others" in r.getMessage() for r in caplog.records)


def test_the_logging_table_applies_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[logging]` level and format configure the process once the file is loaded."""
    config = tmp_path / "server.toml"
    config.write_text(
        'state_dir = "state"\n[[databases]]\nname = "app"\nenvironments = ["production"]\n'
        '[logging]\nlevel = "debug"\nformat = "json"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("DBWARD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("DBWARD_LOG_FORMAT", raising=False)

    def stop(state_dir: Path) -> None:
        raise OSError("stop here")

    monkeypatch.setattr(command, "prepare_state_dir", stop)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert command.run_server(config, listen=None, force_bootstrap=False) == 1
        (handler,) = root.handlers
        assert root.level == logging.DEBUG
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
