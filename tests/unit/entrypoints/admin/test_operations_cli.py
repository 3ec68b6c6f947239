"""`dbward agents|databases|group|init|doctor` through typer's CliRunner over a fake API.

The real server and agent processes are exercised in tests/integration/test_cli_operations.py;
these cover the rendering and the edges a real server does not easily produce.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner, Result

from adapters.cli_client.api_client import ApiClient
from adapters.config.agent import load_agent_settings
from adapters.config.client import ClientConfig, resolve_client_config
from adapters.config.server import load_server_settings
from domain.shared.operations import Operation
from entrypoints.admin import doctor as doctor_module
from entrypoints.admin import output as client_output
from entrypoints.admin.inventory import seen_ago
from entrypoints.cli import app
from entrypoints.version import package_version

URL = "https://dbward.test"
TOKEN = "dbw_" + "a" * 32

AGENT = {
    "id": "agent-eu-1",
    "status": "healthy",
    "last_poll_ago_secs": 2,
    "in_flight": 0,
    "max_concurrent": 2,
    "capabilities": {
        "scopes": [
            {"database": "app", "environment": "staging"},
            {"database": "app", "environment": "production"},
        ],
        "operations": ["execute_query"],
    },
    "degraded_scopes": [{"database": "app", "environment": "production"}],
    "agent_version": "0.3.0",
    "agent_build": "0.3.0",
    "agent_id": "agent-eu-1",
}


class FakeApi:
    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, object]] = {}

    def on(self, path: str, status: int = 200, body: object = None) -> None:
        self.routes[path] = (status, body)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status, body = self.routes.get(
            request.url.path, (404, {"error": "no such route", "code": "not_found"})
        )
        return httpx.Response(status, content=orjson.dumps(body))

    def client(self, config: ClientConfig, timeout: float = 30.0) -> ApiClient:
        return ApiClient(config.server_url, config.token, transport=httpx.MockTransport(self))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(client_output, "api_client_factory", fake.client)
    monkeypatch.setattr(doctor_module, "doctor_client_factory", fake.client)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DBWARD_CONFIG", raising=False)
    monkeypatch.setenv("DBWARD_SERVER_URL", URL)
    monkeypatch.setenv("DBWARD_TOKEN", TOKEN)
    return fake


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def one_line(result: Result) -> dict[str, Any]:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.output
    envelope: dict[str, Any] = json.loads(lines[0])
    return envelope


def test_agents_table_shows_scopes_degraded_scopes_and_last_seen(api: FakeApi) -> None:
    api.on("/api/agents", body={"agents": [AGENT]})
    result = run("agents")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "agent-eu-1" in line)
    assert "app/staging, app/production" in row
    assert "healthy" in row and "2s ago" in row and "0/2" in row
    assert row.count("app/production") == 2  # served and degraded

    assert one_line(run("agents", "--format", "json"))["data"] == [AGENT]


def test_databases_names_unserved_pairs(api: FakeApi) -> None:
    api.on(
        "/api/databases",
        body={
            "databases": [
                {"database": "app", "environment": "staging", "agents": [
                    {"id": "agent-eu-1", "status": "healthy", "last_poll_ago_secs": 70,
                     "degraded": True},
                ]},
                {"database": "app", "environment": "production", "agents": []},
            ]
        },
    )  # fmt: skip
    result = run("databases")
    assert result.exit_code == 0, result.output
    assert "agent-eu-1 (healthy, degraded, 1m ago)" in result.stdout
    assert "1 database/environment pair(s) have no agent serving them." in result.stderr


def test_group_show_of_an_unknown_group_exits_1(api: FakeApi) -> None:
    api.on("/api/groups/ghosts", 404, {"error": "group 'ghosts' not found", "code": "not_found"})
    result = run("group", "show", "ghosts", "--format", "json")
    assert result.exit_code == 1
    assert one_line(result)["error"] == {"code": "not_found", "message": "group 'ghosts' not found"}


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (0, "0s ago"),
        (59, "59s ago"),
        (60, "1m ago"),
        (7200, "2h ago"),
        (90000, "1d ago"),
    ],
)
def test_seen_ago(seconds: object, shown: str) -> None:
    assert seen_ago(seconds) == shown


def test_init_without_a_terminal_needs_the_url(api: FakeApi, tmp_path: Path) -> None:
    result = run("init")
    assert result.exit_code == 2
    assert not (tmp_path / "dbward.toml").exists()


def test_init_rejects_a_url_that_is_not_http(api: FakeApi, tmp_path: Path) -> None:
    result = run("init", "--url", "ftp://dbward.test")
    assert result.exit_code == 2
    assert not (tmp_path / "dbward.toml").exists()


def test_init_replaces_with_yes_and_tightens_the_mode(api: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "dbward.toml"
    path.write_text("[server]\n")
    path.chmod(0o644)
    refused = run("init", "--url", URL, "--token", TOKEN)
    assert refused.exit_code == 1 and "already exists" in refused.stderr
    replaced = run("init", "--url", URL, "--token", TOKEN, "-y")
    assert replaced.exit_code == 0, replaced.output
    assert TOKEN not in replaced.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f'token = "{TOKEN}"' in path.read_text()


def _healthy(api: FakeApi) -> None:
    api.on("/health", body={"status": "ok", "version": package_version()})
    api.on("/ready", body={"status": "ok", "checks": {"store": "ok"}})
    api.on("/api/me", body={"subject_id": "ada", "subject_type": "user", "roles": []})


def test_doctor_passes_with_a_version_warning(api: FakeApi) -> None:
    _healthy(api)
    api.on("/health", body={"status": "ok", "version": "0.0.1"})
    result = run("doctor", "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in one_line(result)["data"]["checks"]}
    assert checks["server version"]["status"] == "warn"
    assert "0.0.1" in checks["server version"]["detail"]


def test_doctor_reports_a_draining_server(api: FakeApi) -> None:
    _healthy(api)
    api.on("/ready", 503, {"status": "draining", "checks": {"store": "ok"}})
    result = run("doctor")
    assert result.exit_code == 2
    assert "✗ server ready" in result.stdout and "draining" in result.stdout
    assert "1 issue(s): server ready" in result.stderr


def test_doctor_without_a_client_config_skips_the_server(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBWARD_SERVER_URL")
    monkeypatch.delenv("DBWARD_TOKEN")
    result = run("doctor", "--format", "quiet")
    assert result.exit_code == 2 and result.stderr == ""
    checks = one_line(result)["data"]["checks"]
    assert [c["status"] for c in checks] == ["fail", "skip", "skip", "skip", "skip"]


def test_doctor_of_a_server_config_alone_needs_no_client_config(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DBWARD_SERVER_URL")
    monkeypatch.delenv("DBWARD_TOKEN")
    config = tmp_path / "server.toml"
    config.write_text(
        'state_dir = "./state"\n[[databases]]\nname = "app"\nenvironments = ["dev"]\n'
    )
    result = run("doctor", "--server", str(config), "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c["status"] for c in one_line(result)["data"]["checks"]}
    assert checks["client config"] == "skip" and checks["token"] == "skip"
    assert checks["server config"] == "ok"

    # A client config that was asked for and is broken still fails.
    missing = run("doctor", "--server", str(config), "--config", "nope.toml", "--format", "json")
    assert missing.exit_code == 2
    assert one_line(missing)["data"]["checks"][0]["status"] == "fail"


def test_init_asks_for_url_and_hidden_token_on_a_terminal(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("entrypoints.admin.init._interactive", lambda out: True)
    result = run("init", "--global", input=f"{URL}/\n{TOKEN}\n")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    path = tmp_path / "home" / ".config" / "dbward" / "config.toml"
    # CliRunner echoes the typed URL (a terminal would); the hidden token is not echoed.
    assert result.stdout.splitlines()[-1] == str(path)
    assert path.read_text().endswith(f'url = "{URL}"\ntoken = "{TOKEN}"\n')
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_init_an_empty_token_answer_stores_none(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("entrypoints.admin.init._interactive", lambda out: True)
    result = run("init", "--url", URL, input="\n")
    assert result.exit_code == 0, result.output
    assert "token" not in (tmp_path / "dbward.toml").read_text().split("[server]")[1]
    assert "no token stored" in result.stderr


def test_init_token_and_no_token_exclude_each_other(api: FakeApi) -> None:
    assert run("init", "--url", URL, "--token", TOKEN, "--no-token").exit_code == 2


def test_init_small_team_preset_writes_configs_the_loaders_accept(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "setup"
    dry = run("init", "--preset", "small-team", "--output-dir", str(out_dir), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert not out_dir.exists() and "[[workflows]]" in dry.stdout

    done = run("init", "--preset", "small-team", "--output-dir", str(out_dir), "--non-interactive")
    assert done.exit_code == 0, done.output
    settings = load_server_settings(out_dir / "dbward-server.toml", {})
    production = settings.workflow_for("app", "production", Operation.EXECUTE_DML)
    development = settings.workflow_for("app", "development", Operation.EXECUTE_DML)
    assert production is not None and development is not None
    assert production.require_reason
    assert [str(a.selector) for step in production.steps for a in step.approvers] == ["role:dba"]
    assert development.auto_approve is not None
    assert settings.state_dir == out_dir / "data"

    for name in ("DEVELOPMENT", "STAGING", "PRODUCTION"):
        monkeypatch.setenv(f"APP_{name}_DATABASE_URL", "postgresql://app@127.0.0.1/app")
    agent = load_agent_settings(
        out_dir / "dbward-agent.toml", {**os.environ, "DBWARD_AGENT_TOKEN": "t"}
    )
    assert {str(scope) for scope in agent.scopes} == {
        "app/development",
        "app/staging",
        "app/production",
    }
    monkeypatch.delenv("DBWARD_SERVER_URL")
    client = resolve_client_config(
        out_dir / "dbward.toml", {"DBWARD_TOKEN": "t"}, cwd=tmp_path, home=None
    )
    assert (client.server_url, client.database(None)) == ("http://127.0.0.1:3000", "app")
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out_dir.iterdir() if p.is_file()} == {
        "dbward-server.toml": 0o600,
        "dbward-agent.toml": 0o600,
        "dbward.toml": 0o600,
    }


def test_init_preset_never_overwrites_without_force(api: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "dbward-agent.toml").write_text("# mine\n")
    refused = run("init", "--preset", "small-team", "--non-interactive", "--format", "json")
    assert refused.exit_code == 1
    assert one_line(refused)["error"]["code"] == "exists"
    assert (tmp_path / "dbward-agent.toml").read_text() == "# mine\n"
    assert not (tmp_path / "dbward-server.toml").exists()
    forced = run("init", "--preset", "small-team", "--non-interactive", "--force")
    assert forced.exit_code == 0, forced.output
    assert "agent_token" in (tmp_path / "dbward-agent.toml").read_text()


def test_doctor_checks_a_server_config_offline(api: FakeApi, tmp_path: Path) -> None:
    _healthy(api)
    good = tmp_path / "server.toml"
    good.write_text('state_dir = "./state"\n[[databases]]\nname = "app"\nenvironments = ["dev"]\n')
    result = run("doctor", "--server", str(good), "--format", "json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in one_line(result)["data"]["checks"]}
    assert checks["server config"]["status"] == "ok"
    assert checks["server state dir"]["detail"].endswith("missing, the server creates it")

    bad = tmp_path / "bad.toml"
    bad.write_text('state_dir = "./state"\nlisten = 5\ncolour = "red"\n')
    result = run("doctor", "--server", str(bad), "--format", "json")
    assert result.exit_code == 2
    failed = [c for c in one_line(result)["data"]["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["server config"]
    assert "colour" in failed[0]["detail"] and "bad.toml" in failed[0]["detail"]

    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    unusable = tmp_path / "unusable.toml"
    unusable.write_text(good.read_text().replace("./state", f"{blocked}/state"))
    result = run("doctor", "--server", str(unusable), "--format", "json")
    assert result.exit_code == 2
    checks = {c["name"]: c for c in one_line(result)["data"]["checks"]}
    assert checks["server state dir"]["status"] == "fail"
