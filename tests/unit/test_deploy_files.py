"""The deployment examples say what the brief says (systemd unit, Docker run)."""

from __future__ import annotations

import configparser

from tests.repo import REPO_ROOT

ROOT = REPO_ROOT


def test_systemd_unit_matches_the_brief() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "dbward-agent.service")
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert service["User"] == "dbward"
    assert service["ExecStart"].endswith("dbward agent --config /etc/dbward/dbward-agent.toml")
    environment = (ROOT / "deploy" / "dbward-agent.service").read_text()
    assert "Environment=DBWARD_AGENT_TOKEN=" in environment
    assert "Environment=DATABASE_URL=" in environment
    assert service["Restart"] == "always"
    assert service["RestartSec"] == "5"
    assert unit["Unit"]["After"] == "network.target"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # systemd must let a drain finish: stop timeout above drain_timeout_secs (60 s).
    assert int(service["TimeoutStopSec"]) > 60


def test_docker_run_matches_the_brief() -> None:
    script = (ROOT / "deploy" / "docker-run-agent.sh").read_text()
    assert "--name dbward-agent" in script
    assert "--network" in script
    assert "-e DBWARD_AGENT_TOKEN" in script and "-e DATABASE_URL" in script
    assert ":/etc/dbward/dbward-agent.toml:ro" in script
    assert "agent --config /etc/dbward/dbward-agent.toml" in script


def test_systemd_server_unit_runs_the_server_unprivileged_and_lets_it_drain() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "dbward-server.service")
    service = unit["Service"]
    assert service["User"] == "dbward"
    assert "dbward server --config /etc/dbward/server.toml" in service["ExecStart"]
    assert service["StateDirectory"] == "dbward"
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "always"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
