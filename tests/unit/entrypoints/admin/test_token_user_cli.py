"""`dbward token …` and `dbward user …` through typer's CliRunner, over an httpx.MockTransport.

The seam is `entrypoints.admin.output.api_client_factory`: the tests replace it with one
that builds the real ApiClient on a fake API server, so every command runs its real config
resolution, request building and output contract (docs/server.md §8.3).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner, Result

from adapters.cli_client.api_client import ApiClient
from adapters.config.client import NO_SERVER_CONFIGURED, ClientConfig
from entrypoints.admin import output as client_config
from entrypoints.admin.tokens import parse_expires
from entrypoints.cli import app

URL = "https://dbward.test"
ADMIN_TOKEN = "dbw_" + "a" * 32
NEW_TOKEN = "dbw_" + "b" * 32


class FakeApi:
    """A route table playing the dbward API; records requests and the configs used."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.configs: list[ClientConfig] = []
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        self.unreachable = False

    def on(self, method: str, path: str, status: int = 200, body: object = None) -> None:
        self.routes[(method, path)] = (status, body)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if self.unreachable:
            raise httpx.ConnectError("Connection refused", request=request)
        status, body = self.routes.get(
            (request.method, request.url.path),
            (404, {"error": "no such route", "code": "not_found", "hint": None}),
        )
        return httpx.Response(status, content=b"" if body is None else orjson.dumps(body))

    def client_for(self, config: ClientConfig) -> ApiClient:
        self.configs.append(config)
        return ApiClient(config.server_url, config.token, transport=httpx.MockTransport(self))

    def bodies(self) -> list[Any]:
        return [orjson.loads(r.content) if r.content else None for r in self.requests]

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DBWARD_* from the developer's shell, an empty project dir and home."""
    for name in ("DBWARD_SERVER_URL", "DBWARD_TOKEN", "DBWARD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(client_config, "api_client_factory", fake.client_for)
    return fake


@pytest.fixture
def connected(monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> FakeApi:
    monkeypatch.setenv("DBWARD_SERVER_URL", URL)
    monkeypatch.setenv("DBWARD_TOKEN", ADMIN_TOKEN)
    return api


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def created_token(**extra: object) -> dict[str, object]:
    return {
        "id": "9b2c0a1e-0000-4000-8000-000000000001",
        "token": NEW_TOKEN,
        "prefix": "bbbbbbbb",
        "subject_id": "prod-agent-1",
        "scope_ceiling": {"roles": ["agent-default"]},
        "effective_roles": ["agent-default"],
        "effective_permissions": ["agent.operate"],
        "expires_at": None,
        **extra,
    }


# --- token create -----------------------------------------------------------------------


def test_brief_agent_token_command_sends_the_body_and_prints_only_the_token(
    connected: FakeApi,
) -> None:
    connected.on("POST", "/api/tokens", 201, created_token())

    result = run(
        "token", "create", "--subject", "prod-agent-1", "--subject-type", "agent",
        "--role", "agent-default",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout == NEW_TOKEN + "\n"
    assert connected.calls() == [("POST", "/api/tokens")]
    assert connected.bodies() == [
        {
            "subject_id": "prod-agent-1",
            "subject_type": "agent",
            "scope_ceiling": {"roles": ["agent-default"]},
        }
    ]
    request = connected.requests[0]
    assert request.headers["Authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert str(request.url) == f"{URL}/api/tokens"
    assert "prod-agent-1" in result.stderr
    assert "shown only once" in result.stderr


def test_agent_token_with_no_scope_ceiling_sends_none(connected: FakeApi) -> None:
    connected.on("POST", "/api/tokens", 201, created_token(scope_ceiling=None))
    result = run(
        "token", "create", "--subject", "a1", "--subject-type", "agent", "--no-scope-ceiling",
        "--name", "prod", "--format", "quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert connected.bodies() == [{"subject_id": "a1", "subject_type": "agent", "name": "prod"}]
    assert result.stderr == ""


def test_user_token_without_subject_uses_api_me(connected: FakeApi) -> None:
    connected.on("GET", "/api/me", body={"subject_id": "alice", "subject_type": "user"})
    connected.on("POST", "/api/tokens", 201, created_token(subject_id="alice"))

    result = run("token", "create", "--scope-roles", "requester,approver", "--role", "requester")

    assert result.exit_code == 0, result.output
    assert result.stdout == NEW_TOKEN + "\n"
    assert connected.calls() == [("GET", "/api/me"), ("POST", "/api/tokens")]
    assert connected.bodies()[1] == {
        "subject_id": "alice",
        "subject_type": "user",
        "scope_ceiling": {"roles": ["requester", "approver"]},
    }


def test_expires_is_sent_as_an_rfc3339_instant(connected: FakeApi) -> None:
    connected.on("POST", "/api/tokens", 201, created_token())
    before = datetime.now(UTC)
    result = run("token", "create", "--subject", "alice", "--expires", "90d")
    assert result.exit_code == 0, result.output
    sent = datetime.fromisoformat(connected.bodies()[0]["expires_at"])
    assert before + timedelta(days=90) - timedelta(seconds=2) <= sent
    assert sent <= datetime.now(UTC) + timedelta(days=90)


@pytest.mark.parametrize(
    "args",
    [
        ["--subject-type", "agent", "--role", "agent-default"],  # agent needs --subject
        ["--no-scope-ceiling"],  # user token
        ["--subject", "a", "--subject-type", "agent", "--no-scope-ceiling", "--role", "x"],
        ["--subject", "a", "--expires", "soon"],
        ["--subject", "a", "--expires", "2001-01-01"],
        ["--subject", "a", "--scope-roles", ","],
        ["--subject", "a", "--subject-type", "robot"],
    ],
)
def test_usage_errors_exit_2_without_calling_the_server(
    connected: FakeApi, args: list[str]
) -> None:
    result = run("token", "create", *args)
    assert result.exit_code == 2, result.output
    assert connected.requests == []
    assert result.stdout == ""


# --- output contract --------------------------------------------------------------------


def test_json_format_prints_one_envelope_line(connected: FakeApi) -> None:
    connected.on("POST", "/api/tokens", 201, created_token())
    result = run(
        "token", "create", "--subject", "prod-agent-1", "--subject-type", "agent",
        "--role", "agent-default", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"ok": True, "data": created_token()}


def test_format_may_be_given_on_the_sub_app(connected: FakeApi) -> None:
    tokens = [{"id": "t1", "subject_id": "alice", "subject_type": "user", "status": "active"}]
    connected.on("GET", "/api/tokens", body={"tokens": tokens})
    result = run("token", "--format", "json", "list")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"ok": True, "data": tokens}


def test_server_error_in_json_mode(connected: FakeApi) -> None:
    connected.on(
        "POST", "/api/tokens", 400, {"error": "too many active tokens", "code": "validation"}
    )
    result = run("token", "create", "--subject", "alice", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "data": None,
        "error": {"code": "validation", "message": "too many active tokens"},
    }


def test_forbidden_in_human_mode_shows_message_and_hint_on_stderr(connected: FakeApi) -> None:
    connected.on(
        "GET",
        "/api/users",
        403,
        {"error": "forbidden", "code": "forbidden", "hint": "check your role permissions"},
    )
    result = run("user", "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error: forbidden" in result.stderr
    assert "hint: check your role permissions" in result.stderr


def test_auth_failure_exits_1(connected: FakeApi) -> None:
    connected.on("DELETE", "/api/tokens/t1", 401, {"error": "authentication failed"})
    result = run("token", "revoke", "t1", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == {
        "code": "unauthorized",
        "message": "authentication failed",
    }


def test_network_error_exits_1_and_names_the_url(connected: FakeApi) -> None:
    connected.unreachable = True
    result = run("token", "inspect", "t1")
    assert result.exit_code == 1
    assert f"cannot reach the dbward server at {URL}/api/tokens/t1/inspect" in result.stderr


def test_quiet_prints_the_envelope_and_nothing_on_stderr(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBWARD_SERVER_URL", "http://dbward.example.com")
    monkeypatch.setenv("DBWARD_TOKEN", ADMIN_TOKEN)
    api.on("DELETE", "/api/tokens/t1", body={"id": "t1", "revoked_at": "2030-01-01T00:00:00Z"})

    quiet = run("token", "revoke", "t1", "--format", "quiet")
    assert quiet.exit_code == 0
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout) == {
        "ok": True,
        "data": {"id": "t1", "revoked_at": "2030-01-01T00:00:00Z"},
    }

    human = run("token", "revoke", "t1")
    assert human.exit_code == 0
    assert "plain http to a non-local host" in human.stderr
    assert "Revoked token t1" in human.stderr


# --- the other token commands -----------------------------------------------------------


def test_token_list_renders_a_table(connected: FakeApi) -> None:
    tokens = [
        {
            "id": "11111111-aaaa-4000-8000-000000000001",
            "subject_type": "agent",
            "subject_id": "prod-agent-1",
            "token_prefix": "bbbbbbbb",
            "scope_ceiling": {"roles": ["agent-default"]},
            "name": None,
            "status": "active",
            "expires_at": None,
            "created_at": "2030-01-01T00:00:00Z",
            "revoked_at": None,
        }
    ]
    connected.on("GET", "/api/tokens", body={"tokens": tokens})
    result = run(
        "token", "list", "--type", "agent", "--status", "active", "--subject", "prod-agent-1"
    )
    assert result.exit_code == 0, result.output
    assert connected.requests[0].url.params == httpx.QueryParams(
        {"subject": "prod-agent-1", "status": "active", "type": "agent"}
    )
    assert "11111111-aaaa-4000-8000-000000000001" in result.stdout
    assert "agent-default" in result.stdout
    assert "never" in result.stdout


def test_token_inspect_shows_fields(connected: FakeApi) -> None:
    info = {
        "id": "t1",
        "subject_id": "alice",
        "subject_type": "user",
        "scope_ceiling": {"roles": ["requester"]},
        "resolved_roles": ["admin", "requester"],
        "effective_roles": ["requester"],
        "effective_permissions": ["request.query", "token.create"],
        "status": "active",
    }
    connected.on("GET", "/api/tokens/t1/inspect", body=info)
    result = run("token", "inspect", "t1")
    assert result.exit_code == 0, result.output
    assert "admin, requester" in result.stdout
    assert "request.query, token.create" in result.stdout


# --- users ------------------------------------------------------------------------------


def test_user_add_prints_only_the_initial_token(connected: FakeApi) -> None:
    connected.on(
        "POST",
        "/api/users",
        201,
        {
            "id": "bob",
            "token": NEW_TOKEN,
            "token_prefix": "bbbbbbbb",
            "roles": ["requester"],
            "groups": [],
        },
    )
    result = run("user", "add", "bob", "--role", "requester", "--group", "dba", "--group", "dba")
    assert result.exit_code == 0, result.output
    assert result.stdout == NEW_TOKEN + "\n"
    assert connected.bodies() == [{"id": "bob", "roles": ["requester"], "groups": ["dba"]}]


def test_user_list_show_and_state_changes(connected: FakeApi) -> None:
    bob = {"id": "bob", "roles": ["requester"], "groups": ["dba"], "status": "active"}
    connected.on("GET", "/api/users", body={"users": [bob]})
    connected.on("GET", "/api/users/bob", body=bob)
    for action in ("suspend", "activate"):
        connected.on("POST", f"/api/users/bob/{action}", body={"id": "bob"})
    connected.on("DELETE", "/api/users/bob", 204)

    listed = run("user", "list")
    assert listed.exit_code == 0
    assert "bob" in listed.stdout and "requester" in listed.stdout

    shown = run("user", "show", "bob", "--format", "json")
    assert json.loads(shown.stdout) == {"ok": True, "data": bob}

    for command in ("suspend", "activate", "rm"):
        result = run("user", command, "bob")
        assert result.exit_code == 0, result.output
    assert connected.calls()[-3:] == [
        ("POST", "/api/users/bob/suspend"),
        ("POST", "/api/users/bob/activate"),
        ("DELETE", "/api/users/bob"),
    ]


def test_user_update_sends_only_the_given_changes(connected: FakeApi) -> None:
    connected.on("PATCH", "/api/users/bob", body={"id": "bob", "roles": ["requester", "approver"]})
    result = run("user", "update", "bob", "--add-role", "approver", "--rm-group", "dba")
    assert result.exit_code == 0, result.output
    assert connected.bodies() == [{"add_roles": ["approver"], "rm_groups": ["dba"]}]
    assert "requester, approver" in result.stdout


@pytest.mark.parametrize(
    "args", [["bob"], ["bob", "--role", "requester", "--add-role", "approver"]]
)
def test_user_update_usage_errors(connected: FakeApi, args: list[str]) -> None:
    result = run("user", "update", *args)
    assert result.exit_code == 2
    assert connected.requests == []


def test_missing_argument_is_a_usage_error(connected: FakeApi) -> None:
    assert run("user", "show").exit_code == 2
    assert run("token", "revoke").exit_code == 2


# --- configuration ----------------------------------------------------------------------


def test_no_configuration_is_a_clear_error(api: FakeApi) -> None:
    result = run("token", "list")
    assert result.exit_code == 1
    assert NO_SERVER_CONFIGURED in result.stderr
    assert api.requests == []

    as_json = run("token", "list", "--format", "json")
    assert json.loads(as_json.stdout) == {
        "ok": False,
        "data": None,
        "error": {"code": "config", "message": NO_SERVER_CONFIGURED},
    }


def test_env_overrides_the_config_file(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "client.toml"
    config.write_text('[server]\nurl = "https://file.example"\ntoken = "dbw_from_file"\n')
    api.on("GET", "/api/tokens", body={"tokens": []})

    assert run("token", "list", "--config", str(config)).exit_code == 0
    assert (api.configs[-1].server_url, api.configs[-1].token) == (
        "https://file.example",
        "dbw_from_file",
    )

    monkeypatch.setenv("DBWARD_SERVER_URL", URL)
    assert run("token", "list", "--config", str(config)).exit_code == 0
    assert (api.configs[-1].server_url, api.configs[-1].token) == (URL, "dbw_from_file")

    monkeypatch.setenv("DBWARD_TOKEN", ADMIN_TOKEN)
    assert run("token", "--config", str(config), "list").exit_code == 0
    assert (api.configs[-1].server_url, api.configs[-1].token) == (URL, ADMIN_TOKEN)
    assert api.requests[-1].headers["Authorization"] == f"Bearer {ADMIN_TOKEN}"


def test_missing_config_file_is_an_error(api: FakeApi, tmp_path: Path) -> None:
    result = run("user", "list", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 1
    assert "config file not found" in result.stderr


# --- --expires ----------------------------------------------------------------------------

NOW = datetime(2030, 6, 15, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30m", "2030-06-15T12:30:00Z"),
        ("24h", "2030-06-16T12:00:00Z"),
        ("90d", "2030-09-13T12:00:00Z"),
        ("2030-12-31", "2030-12-31T00:00:00Z"),
        ("2031-01-01T10:00:00Z", "2031-01-01T10:00:00Z"),
        ("2031-01-01T10:00:00+02:00", "2031-01-01T08:00:00Z"),
        (" 7d ", "2030-06-22T12:00:00Z"),
    ],
)
def test_parse_expires(value: str, expected: str) -> None:
    assert parse_expires(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0d", "positive"),
        ("10y", "expected"),
        ("2030-02-30", "not a valid date"),
        ("2031-01-01T10:00:00", "offset"),
        ("2030-06-15", "future"),
        ("2030-06-15T11:59:59Z", "future"),
        ("999999999999d", "too far"),
        ("", "expected"),
    ],
)
def test_parse_expires_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_expires(value, NOW)
