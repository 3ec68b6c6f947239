"""`dbward dev`: the files it writes load as the real configs, and a dead server is named."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from adapters.config.agent import load_agent_settings
from adapters.config.client import resolve_client_config
from adapters.config.server import load_server_settings
from domain.shared.scopes import Scope
from entrypoints.dev import stack as dev
from entrypoints.dev.stack import DevError, DevPaths, DevStack

TOKEN = "dbw_" + "ab" * 16


def test_the_server_config_auto_approves_development_and_wants_one_approval_on_production(
    tmp_path: Path,
) -> None:
    paths = DevPaths(tmp_path)
    dev._write_server_config(paths, 3999)
    settings = load_server_settings(paths.server_config, {})
    assert settings.listen_port == 3999
    assert settings.registered_scopes == {
        Scope("app", "development"),
        Scope("app", "production"),
    }
    development, production = settings.workflows
    assert development.auto_approve is not None
    assert not development.steps
    assert production.auto_approve is None
    (step,) = production.steps
    ((approver),) = step.approvers
    assert (approver.selector.name, approver.min) == ("approver", 1)


def test_the_agent_config_serves_both_environments(tmp_path: Path) -> None:
    paths = DevPaths(tmp_path)
    urls = {
        "development": "postgresql://postgres@127.0.0.1:5999/app_development",
        "production": "postgresql://postgres@127.0.0.1:5999/app_production",
    }
    dev._write_agent_config(paths, "http://127.0.0.1:3999", urls)
    settings = load_agent_settings(paths.agent_config, {"DBWARD_AGENT_TOKEN": TOKEN})
    assert settings.agent_id == "dev-agent"
    assert set(settings.scopes) == {Scope("app", "development"), Scope("app", "production")}


def test_a_client_config_is_private_and_resolves(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    dev._write_client_config(path, "http://127.0.0.1:3999", TOKEN)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = resolve_client_config(path, {}, cwd=tmp_path, home=None)
    assert (config.server_url, config.token) == ("http://127.0.0.1:3999", TOKEN)


def test_a_server_that_exits_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev, "START_TIMEOUT_SECS", 10.0)
    stack = DevStack(DevPaths(tmp_path), port=9)  # nothing answers on the discard port
    stack.spawn("server", [sys.executable, "-c", "print('address already in use'); exit(3)"])
    try:
        with pytest.raises(DevError, match="address already in use"):
            dev._wait_healthy(stack)
    finally:
        stack.stop()


def test_a_database_url_is_shown_without_its_password() -> None:
    assert dev.redacted("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert dev.redacted("postgresql://u@h/d") == "postgresql://u@h/d"
