"""`dbward agent --check-config` as a new user runs it: a real process, the example file."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.integration.agent_process import DBWARD
from tests.repo import REPO_ROOT

pytestmark = pytest.mark.integration

ROOT = REPO_ROOT
EXAMPLE = ROOT / "examples" / "agent.toml"
TOKEN = "dbw_0123456789abcdef0123456789abcdef"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DBWARD_", "DATABASE_URL"))}
    return subprocess.run(
        [str(DBWARD), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


def test_example_config_checks_and_prints_the_effective_settings_redacted() -> None:
    done = run(
        "agent", "--config", str(EXAMPLE), "--check-config", env={"DBWARD_AGENT_TOKEN": TOKEN}
    )
    assert done.returncode == 0, done.stderr
    effective = tomllib.loads(done.stdout)
    assert effective["statement_timeout_secs"] == 30
    assert effective["lease_duration_secs"] == 300
    assert effective["poll_wait_ms"] == 20000
    assert "app" in effective["databases"]
    assert TOKEN not in done.stdout
    assert "redacted" in effective["server"]["agent_token"]


def test_database_password_is_redacted() -> None:
    env = {"DBWARD_AGENT_TOKEN": TOKEN, "DATABASE_URL": "postgres://agent:hunter2@db:5432/app"}
    done = run("agent", "--config", str(EXAMPLE), "--check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout
    assert "postgres://agent:***@db:5432/app" in done.stdout


def test_undefined_variable_is_one_line_naming_file_key_and_fix() -> None:
    done = run("agent", "--config", str(EXAMPLE), "--check-config")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(EXAMPLE) in lines[0]
    assert "server.agent_token" in lines[0]
    assert "${DBWARD_AGENT_TOKEN}" in lines[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server\n", "invalid TOML"),
        ("poll_intervall_ms = 5\n", "did you mean poll_interval_ms"),
        ('max_concurrent_tasks = "2"\n', "max_concurrent_tasks"),
    ],
)
def test_bad_files_exit_1_with_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "agent.toml"
    body = text + '[server]\nurl = "https://dbward.example.com"\nagent_token = "x"\n'
    body += '[databases.app.production]\nurl = "postgres://h/app"\n'
    config.write_text(body if not text.startswith("[server\n") else text)
    done = run("agent", "--config", str(config), "--check-config")
    assert done.returncode == 1
    assert str(config) in done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("server", "database", "expected"),
    [
        ("http://dbward.example.com", "postgres://h/app", "allow_insecure"),
        ("ftp://dbward.example.com", "postgres://h/app", "server.url"),
        ("https://dbward.example.com", "sqlite:///x", "databases.app.production.url"),
    ],
)
def test_refused_urls_name_the_key(
    tmp_path: Path, server: str, database: str, expected: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[server]\nurl = "{server}"\nagent_token = "x"\n'
        f'[databases.app.production]\nurl = "{database}"\n'
    )
    done = run("agent", "--config", str(config), "--check-config")
    assert done.returncode == 1
    assert expected in done.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = run("agent", "--config", str(tmp_path / "nope.toml"), "--check-config")
    assert done.returncode == 1
    assert "nope.toml" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_flag() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("dbward ")
