"""`dbward migrate …` through typer's CliRunner over an httpx.MockTransport: what is sent,
and the exit codes of a pending (2), timed-out (124) and failed (1) migration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from adapters.cli_client.api_client import ApiClient
from adapters.config.client import ClientConfig
from domain.shared.migration_files import validate_migration_detail
from entrypoints.admin import output
from entrypoints.cli import app

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DBWARD_SERVER_URL", "http://127.0.0.1:3000")
    monkeypatch.setenv("DBWARD_TOKEN", "dbw_" + "a1" * 16)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_users.sql").write_text(
        "-- migrate:up\nCREATE TABLE users (id int);\n-- migrate:down\nDROP TABLE users;\n"
    )
    return tmp_path


def _serve(monkeypatch: pytest.MonkeyPatch, handler: Handler) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    def factory(config: ClientConfig) -> ApiClient:
        return ApiClient(config.server_url, config.token, transport=httpx.MockTransport(record))

    monkeypatch.setattr(output, "api_client_factory", factory)
    return seen


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["migrate", *args])


def _created(status: str, approvers: list[str] | None = None) -> httpx.Response:
    body = {"id": "r1", "status": status, "approvers": approvers or []}
    return httpx.Response(201, json=body)


def test_up_submits_a_valid_detail_and_prints_what_was_applied(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return _created("dispatched")
        if request.url.path.endswith("/result/stream"):
            return httpx.Response(200, json={"success": True, "result_data": {"applied": ["1"]}})
        return httpx.Response(200, json={"id": "r1", "status": "executed"})

    seen = _serve(monkeypatch, handler)
    done = _invoke("up", "--database", "app", "-e", "staging", "-y", "--reason", "release")
    assert done.exit_code == 0, done.output
    assert "Applied 1 migration(s): 1" in done.stdout
    body = json.loads(seen[0].content)
    assert (body["database"], body["environment"], body["operation"], body["reason"]) == (
        "app",
        "staging",
        "migrate_up",
        "release",
    )
    assert validate_migration_detail("migrate_up", body["detail"]) == ("1",)


def test_a_pending_migration_names_its_approvers_and_exits_2(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _serve(monkeypatch, lambda _: _created("pending", ["role:dba"]))
    done = _invoke("down", "--database", "app", "-y", "--format", "json")
    assert done.exit_code == 2, done.output
    envelope: dict[str, Any] = json.loads(done.stdout)
    assert envelope["error"]["code"] == "pending_approval"
    assert envelope["data"]["approvers"] == ["role:dba"]
    assert len(seen) == 1  # no waiting


def test_the_wait_ends_with_124_at_the_timeout(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return _created("dispatched")
        return httpx.Response(200, json={"id": "r1", "status": "dispatched"})

    _serve(monkeypatch, handler)
    now = [0.0]
    monkeypatch.setattr("entrypoints.admin.waiting.time.monotonic", lambda: now[0])
    monkeypatch.setattr(
        "entrypoints.admin.waiting.time.sleep", lambda secs: now.__setitem__(0, now[0] + secs + 5)
    )
    done = _invoke("up", "--database", "app", "-y", "--timeout", "12", "--format", "json")
    assert done.exit_code == 124, done.output
    assert json.loads(done.stdout)["error"]["code"] == "timeout"


def test_a_failed_migration_exits_1_with_the_agent_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return _created("dispatched")
        if request.url.path.endswith("/result/stream"):
            return httpx.Response(
                200, json={"success": False, "error_message": "migration error: boom"}
            )
        return httpx.Response(200, json={"id": "r1", "status": "failed"})

    _serve(monkeypatch, handler)
    done = _invoke("up", "--database", "app", "-y", "--format", "json")
    assert done.exit_code == 1, done.output
    assert json.loads(done.stdout)["error"] == {
        "code": "execution_failed",
        "message": "migration error: boom",
    }


def test_local_problems_are_refused_before_anything_is_sent(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _serve(monkeypatch, lambda _: _created("dispatched"))
    assert "which database?" in _invoke("up", "-y").stderr
    empty = _invoke("up", "--database", "app", "-y", "--dir", "nowhere")
    assert empty.exit_code == 1 and "migrations directory not found" in empty.stderr
    repair = _invoke("repair", "--action", "remove", "--version", "1", "--database", "app", "-y")
    assert repair.exit_code == 2 and "emergency-only" in repair.stderr
    assert seen == []
