"""The container deployment: one image for both programs, a non-root user, health checks,
and a compose file whose services, configs and checks fit together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from adapters.config.agent import load_agent_settings
from adapters.config.server import load_server_settings
from tests.repo import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_image_runs_as_a_non_root_user_with_a_health_check() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    runtime = dockerfile.split("FROM runtime AS tests")[0]
    assert "USER dbward" in runtime
    assert "HEALTHCHECK" in runtime
    assert 'ENTRYPOINT ["dbward"]' in runtime


def test_compose_runs_the_whole_system_with_health_checks() -> None:
    assert {"postgres", "mysql", "server", "agent", "tests"} <= set(SERVICES)
    for name in ("postgres", "mysql", "server", "agent"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["server"]["command"][0] == "server"
    assert SERVICES["agent"]["depends_on"]["server"]["condition"] == "service_healthy"
    assert "/tmp/dbward-agent-ready" in SERVICES["agent"]["healthcheck"]["test"]
    assert SERVICES["tests"]["build"]["target"] == "tests"


def _mounted(service: str, target: str) -> Path:
    for volume in SERVICES[service]["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return REPO_ROOT / source
    raise AssertionError(f"{service} mounts nothing at {target}")


def test_the_compose_configs_load_and_agree() -> None:
    server = load_server_settings(_mounted("server", "/etc/dbward/server.toml"), os.environ)
    agent = load_agent_settings(
        _mounted("agent", "/etc/dbward/dbward-agent.toml"),
        {"DBWARD_AGENT_TOKEN": "dbw_" + "0" * 32},
    )
    assert {db.scope for db in agent.databases} <= server.registered_scopes
    assert agent.server.url == "http://server:3000"
    # The test service reaches the databases under their service names.
    environment = SERVICES["tests"]["environment"]
    assert "@postgres:5432/" in environment["DBWARD_TEST_POSTGRES_URL"]
    assert "@mysql:3306/" in environment["DBWARD_TEST_MYSQL_URL"]


def test_the_health_check_reads_the_agents_readiness_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = REPO_ROOT / "deploy" / "healthcheck.py"
    environ = {**os.environ, "DBWARD_READINESS_FILE": str(ready)}
    # Outside a container PID 1 is not `dbward server`, so the agent's check applies.
    missing = subprocess.run([sys.executable, str(script)], env=environ, check=False)
    ready.touch()
    present = subprocess.run([sys.executable, str(script)], env=environ, check=False)
    assert (missing.returncode, present.returncode) == (1, 0)
