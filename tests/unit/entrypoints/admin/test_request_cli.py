"""`dbward execute` and `dbward request …` over a scripted fake API: the cases a real server
does not produce on demand (a Ctrl-C mid-wait, a dispatch that fell back to approved, a
409 on resume, an approved request from execute)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner, Result

from adapters.cli_client.api_client import ApiClient
from adapters.config.client import ClientConfig
from entrypoints.admin import output
from entrypoints.cli import app

URL = "https://dbward.test"
RESULT = {
    "_dbward_result": True,
    "success": True,
    "rows_affected": None,
    "truncated": False,
    "error_message": None,
    "result_data": {
        "rows": [{"n": 1}],
        "truncated": False,
        "truncation_reason": None,
        "columns": [{"name": "n", "type": "int4"}],
    },
}

Handler = Callable[[httpx.Request], tuple[int, object]]


class ScriptedApi:
    """Answers each (method, path) from a list of handlers, one per call, the last repeated."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Handler]] = {}
        self.calls: list[tuple[str, str, Any]] = []

    def on(self, method: str, path: str, *answers: tuple[int, object] | Handler) -> None:
        self.script[(method, path)] = [
            answer if callable(answer) else (lambda _r, a=answer: a) for answer in answers
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        body = orjson.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body))
        handlers = self.script.get((request.method, request.url.path))
        if not handlers:
            return httpx.Response(404, json={"error": "no such route", "code": "not_found"})
        handler = handlers.pop(0) if len(handlers) > 1 else handlers[0]
        status, answer = handler(request)
        return httpx.Response(status, content=b"" if answer is None else orjson.dumps(answer))

    def client_for(self, config: ClientConfig) -> ApiClient:
        return ApiClient(config.server_url, config.token, transport=httpx.MockTransport(self))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ScriptedApi:
    monkeypatch.delenv("DBWARD_CONFIG", raising=False)
    monkeypatch.setenv("DBWARD_SERVER_URL", URL)
    monkeypatch.setenv("DBWARD_TOKEN", "dbw_" + "a" * 32)
    monkeypatch.chdir(tmp_path)
    fake = ScriptedApi()
    monkeypatch.setattr(output, "api_client_factory", fake.client_for)
    return fake


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def envelope(result: Result) -> dict[str, Any]:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


def _interrupt(_request: httpx.Request) -> tuple[int, object]:
    raise KeyboardInterrupt


def test_ctrl_c_while_waiting_names_the_request_and_exits_130(api: ScriptedApi) -> None:
    api.on("POST", "/api/requests", (201, {"id": "r1", "status": "dispatched", "approvers": []}))
    api.on("GET", "/api/requests/r1", (200, {"id": "r1", "status": "dispatched"}), _interrupt)
    result = run("execute", "SELECT 1", "-d", "app", "-y")
    assert result.exit_code == 130
    assert "interrupted: request r1 keeps going" in result.stderr
    as_json = run("execute", "SELECT 1", "-d", "app", "-y", "--format", "json")
    assert as_json.exit_code == 130
    assert envelope(as_json)["error"]["code"] == "interrupted"
    assert envelope(as_json)["data"] == {"id": "r1"}


def test_a_dispatch_that_fell_back_to_approved_is_resumed_and_awaited(api: ScriptedApi) -> None:
    api.on("POST", "/api/requests", (201, {"id": "r2", "status": "dispatched", "approvers": []}))
    api.on(
        "GET",
        "/api/requests/r2",
        (200, {"id": "r2", "status": "dispatched", "queue_hint": "no_agents"}),
        (200, {"id": "r2", "status": "auto_approved"}),
        (200, {"id": "r2", "status": "executed"}),
    )
    api.on("POST", "/api/requests/r2/resume", (200, {"id": "r2", "status": "dispatched"}))
    api.on("GET", "/api/requests/r2/result/stream", (200, RESULT))
    result = run("execute", "SELECT 1", "-d", "app", "-y", "--result-format", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "n\n1\n"
    assert "no agent serves this database" in result.stderr
    assert ("POST", "/api/requests/r2/resume", {}) in api.calls


def test_an_approved_but_not_resumed_request_from_execute_exits_2(api: ScriptedApi) -> None:
    api.on("POST", "/api/requests", (200, {"id": "r3", "status": "approved", "approvers": []}))
    result = run("execute", "SELECT 1", "-d", "app", "-y", "--format", "json")
    assert result.exit_code == 2
    assert envelope(result)["error"]["code"] == "approved_pending_resume"


def test_execute_reads_sql_from_a_file_and_sends_reason_and_operation(
    api: ScriptedApi, tmp_path: Path
) -> None:
    (tmp_path / "q.sql").write_text("SELECT 1\n")
    api.on("POST", "/api/requests", (201, {"id": "r4", "status": "rejected", "approvers": []}))
    result = run(
        "execute", "-f", "q.sql", "-d", "app", "-e", "prod", "--reason", "why",
        "--operation", "execute_query", "-y", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert envelope(result)["error"]["code"] == "rejected"
    assert api.calls[0][2] == {
        "database": "app",
        "environment": "prod",
        "detail": "SELECT 1\n",
        "reason": "why",
        "operation": "execute_query",
    }
    assert run("execute", "-f", "missing.sql", "-d", "app").exit_code == 2


def test_resume_refused_with_409_names_the_current_status(api: ScriptedApi) -> None:
    conflict = {"error": "invalid transition", "code": "invalid_transition"}
    api.on("POST", "/api/requests/r5/resume", (409, conflict))
    api.on("GET", "/api/requests/r5", (200, {"id": "r5", "status": "pending"}))
    result = run("request", "resume", "r5")
    assert result.exit_code == 1
    assert "the request is pending" in result.stderr


def test_a_failed_result_exits_1_with_the_error(api: ScriptedApi) -> None:
    failed = {**RESULT, "success": False, "error_message": "relation x does not exist"}
    api.on("GET", "/api/requests/r6/result/content", (200, failed))
    result = run("request", "result", "r6")
    assert result.exit_code == 1
    assert "relation x does not exist" in result.stderr


def test_approve_prints_the_step_and_hints_the_resume(api: ScriptedApi) -> None:
    answer = {
        "id": "r7",
        "status": "approved",
        "matched_selector": "role:approver",
        "current_step": 1,
        "total_steps": 1,
    }
    api.on("POST", "/api/requests/r7/approve", (200, answer))
    result = run("request", "approve", "r7", "--as", "role:approver", "--comment", "ok")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Approved as role:approver (step 1/1)\n"
    assert "dbward request resume r7" in result.stderr
    assert api.calls[0][2] == {"comment": "ok", "selector": "role:approver"}


def test_execute_sends_emergency_metadata_sharing_and_no_store(api: ScriptedApi) -> None:
    api.on("POST", "/api/requests", (201, {"id": "r9", "status": "cancelled", "approvers": []}))
    result = run(
        "execute", "DROP TABLE t", "-d", "app", "--emergency", "--allow-ddl", "--reason", "fire",
        "--ticket", "OPS-1", "--repo", "https://git.example/app", "--idempotency-key", "k1",
        "--share-with", "role:dba", "--share-with", "user:bo", "--share-with", "role:dba",
        "--no-result-store", "-y", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert api.calls[0][2] == {
        "database": "app",
        "environment": "development",
        "detail": "DROP TABLE t",
        "reason": "fire",
        "emergency": True,
        "allow_ddl": True,
        "metadata": {"ticket": "OPS-1", "repo": "https://git.example/app"},
        "idempotency_key": "k1",
        "share_with": ["role:dba", "user:bo"],
        "no_store": True,
    }


def test_allow_ddl_without_emergency_is_a_usage_error(api: ScriptedApi) -> None:
    result = run("execute", "DROP TABLE t", "-d", "app", "--allow-ddl", "-y")
    assert result.exit_code == 2
    assert "--allow-ddl only goes with --emergency" in result.stderr
    assert api.calls == []


def test_execute_takes_database_and_environment_from_the_client_config(
    api: ScriptedApi, tmp_path: Path
) -> None:
    api.on("POST", "/api/requests", (201, {"id": "r10", "status": "expired", "approvers": []}))
    assert run("execute", "SELECT 1", "-y").exit_code == 2  # no database anywhere
    (tmp_path / "dbward.toml").write_text(
        'default_database = "billing"\ndefault_environment = "staging"\n'
        "[databases.billing]\n[databases.app]\n"
    )
    assert run("execute", "SELECT 1", "-y").exit_code == 1
    assert api.calls[-1][2]["database"] == "billing"
    assert api.calls[-1][2]["environment"] == "staging"
    assert run("execute", "SELECT 1", "-d", "app", "-e", "production", "-y").exit_code == 1
    assert (api.calls[-1][2]["database"], api.calls[-1][2]["environment"]) == ("app", "production")
    unknown = run("execute", "SELECT 1", "-d", "nope", "-y")
    assert unknown.exit_code == 2 and "'nope' is not in the" in unknown.stderr


def test_resuming_a_lost_execution_needs_a_confirmation(api: ScriptedApi) -> None:
    lost = {"id": "r11", "status": "execution_lost", "operation": "execute_dml"}
    api.on("GET", "/api/requests/r11", (200, lost), (200, lost), (200, RESULT_REQUEST))
    api.on("POST", "/api/requests/r11/resume", (200, {"id": "r11", "status": "dispatched"}))
    api.on("GET", "/api/requests/r11/result/stream", (200, RESULT))
    refused = run("request", "resume", "r11", "--format", "json")
    assert refused.exit_code == 1
    assert envelope(refused)["error"]["code"] == "confirmation_required"
    assert "may already have run" in refused.stderr
    assert not [call for call in api.calls if call[0] == "POST"]
    done = run("request", "resume", "r11", "-y", "--format", "json")
    assert done.exit_code == 0, done.output
    assert ("POST", "/api/requests/r11/resume", {}) in api.calls


RESULT_REQUEST = {"id": "r11", "status": "executed"}


def test_cancelling_a_running_request_needs_a_confirmation(api: ScriptedApi) -> None:
    running = {"id": "r12", "status": "running", "operation": "migrate_up"}
    api.on("GET", "/api/requests/r12", (200, running), (200, running))
    api.on("POST", "/api/requests/r12/cancel", (200, {"id": "r12", "status": "cancelled"}))
    refused = run("request", "cancel", "r12", "--format", "json")
    assert refused.exit_code == 1
    assert envelope(refused)["error"]["code"] == "confirmation_required"
    assert "is running" in refused.stderr
    assert not [call for call in api.calls if call[0] == "POST"]
    done = run("request", "cancel", "r12", "-y", "--format", "json")
    assert done.exit_code == 0, done.output
    assert [call[1] for call in api.calls if call[0] == "POST"] == ["/api/requests/r12/cancel"]


def test_cancelling_a_request_that_is_not_running_asks_nothing(api: ScriptedApi) -> None:
    api.on("GET", "/api/requests/r13", (200, {"id": "r13", "status": "pending"}))
    api.on("POST", "/api/requests/r13/cancel", (200, {"id": "r13", "status": "cancelled"}))
    done = run("request", "cancel", "r13", "--format", "json")
    assert done.exit_code == 0, done.output
    assert envelope(done)["data"]["status"] == "cancelled"


def test_request_list_pages_and_says_where_the_next_page_starts(api: ScriptedApi) -> None:
    row = {"id": "r12", "status": "pending", "database": "app", "environment": "dev"}
    api.on(
        "GET",
        "/api/requests",
        (200, {"requests": [row, row], "total": 5, "limit": 2, "offset": 2}),
    )
    result = run("request", "list", "--limit", "2", "--offset", "2")
    assert result.exit_code == 0, result.output
    assert "showing 3-4 of 5; next: --offset 4" in result.stderr
    sent = api.calls[-1]
    assert sent[:2] == ("GET", "/api/requests")
    as_json = run("request", "list", "--limit", "2", "--offset", "2", "--format", "json")
    assert envelope(as_json)["data"] == [row, row]
    api.on("GET", "/api/requests", (200, {"requests": [row], "total": 5, "offset": 4}))
    assert "showing" not in run("request", "list", "--offset", "4").stderr


def test_request_list_folds_to_the_terminal_width(
    api: ScriptedApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = {"id": "r" * 36, "status": "pending", "database": "app", "requester": "someone"}
    api.on("GET", "/api/requests", (200, {"requests": [row], "total": 1, "offset": 0}))
    monkeypatch.setenv("COLUMNS", "60")
    narrow = run("request", "list")
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60
    monkeypatch.delenv("COLUMNS")
    wide = run("request", "list")
    assert any("r" * 36 in line for line in wide.stdout.splitlines())


def test_merge_global_before_the_command_holds_for_it(
    api: ScriptedApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DBWARD_SERVER_URL")
    monkeypatch.delenv("DBWARD_TOKEN")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    global_file = tmp_path / "home" / ".config" / "dbward" / "config.toml"
    global_file.parent.mkdir(parents=True)
    global_file.write_text(f'[server]\nurl = "{URL}"\ntoken = "dbw_{"b" * 32}"\n')
    (tmp_path / "team.toml").write_text('default_environment = "staging"\n')
    api.on("GET", "/api/requests", (200, {"requests": [], "total": 0, "offset": 0}))
    alone = run("request", "list", "--config", "team.toml", "--format", "json")
    assert alone.exit_code == 1 and envelope(alone)["error"]["code"] == "config"
    merged = run("--merge-global", "request", "list", "--config", "team.toml", "--format", "json")
    assert merged.exit_code == 0, merged.output


def test_show_prints_the_risk_and_every_finding_before_the_sql(api: ScriptedApi) -> None:
    api.on(
        "GET",
        "/api/requests/r1",
        (
            200,
            {
                "id": "r1",
                "status": "pending",
                "detail": "DELETE FROM big_t WHERE id = 1",
                "context": {
                    "tables": ["big_t"],
                    "sql_review": {
                        "policy_id": "builtin-default",
                        "findings": [
                            {
                                "code": "large_in_list",
                                "action": "warn",
                                "message": "IN list of 300 items",
                                "statement": 1,
                            }
                        ],
                        "blocked": False,
                    },
                    "risk": {
                        "level": "medium",
                        "factors": [
                            {"code": "large_table", "detail": "public.big_t ~5000 rows"},
                            {"code": "review_warnings", "detail": "1 finding"},
                        ],
                    },
                },
            },
        ),
    )
    result = run("request", "show", "r1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    risk = next(line for line in lines if line.startswith("risk "))
    assert risk.split(None, 1)[1] == (
        "medium - large_table (public.big_t ~5000 rows) - review_warnings (1 finding)"
    )
    finding = next(line for line in lines if line.startswith("finding "))
    assert finding.split(None, 1)[1] == "warn large_in_list: IN list of 300 items"
    assert lines.index(finding) < next(
        i for i, text in enumerate(lines) if text.startswith("detail")
    )


def test_show_of_a_migration_prints_no_risk_or_findings(api: ScriptedApi) -> None:
    api.on(
        "GET",
        "/api/requests/r2",
        (200, {"id": "r2", "status": "pending", "detail": "{}", "context": {"risk": None}}),
    )
    result = run("request", "show", "r2")
    assert result.exit_code == 0, result.output
    assert not any(line.startswith(("risk", "finding")) for line in result.output.splitlines())
