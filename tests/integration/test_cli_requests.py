"""`dbward whoami`, `dbward execute` and `dbward request …` as a person runs them (docs/cli.md).

A real `dbward server` (development auto-approved, production one approval step, staging
auto-approved but served by no agent) and a real `dbward agent` on PostgreSQL; every CLI
call is a `dbward` subprocess whose `--format json` line is parsed and whose exit code is
checked: 0 ok, 1 error, 2 usage or pending approval, 124 timeout, 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_process import DBWARD, AgentProcess, wait_until
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

WORKFLOWS = """
[[databases]]
name = "app"
environments = ["development", "production", "staging"]
[[workflows]]
database = "app"
environment = "development"
auto_approve = { mode = "always" }
[[workflows]]
database = "app"
environment = "staging"
auto_approve = { mode = "always" }
[[workflows]]
database = "app"
environment = "production"
[[workflows.steps]]
[[workflows.steps.approvers]]
role = "approver"
min = 1
"""


@dataclass
class Cli:
    """Runs `dbward …` with one user's token; `json()` parses the one envelope line."""

    server_url: str
    token: str
    cwd: Path

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DBWARD_")}
        return {**clean, "DBWARD_SERVER_URL": self.server_url, "DBWARD_TOKEN": self.token}

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DBWARD), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def json(self, *args: str, expect: int = 0) -> dict[str, Any]:
        done = self.run(*args, "--format", "json")
        assert done.returncode == expect, (done.returncode, done.stdout, done.stderr)
        lines = done.stdout.splitlines()
        assert len(lines) == 1, done.stdout
        envelope: dict[str, Any] = json.loads(lines[0])
        assert set(envelope) >= {"ok", "data"}
        assert envelope["ok"] is (expect == 0)
        return envelope


@dataclass
class Stack:
    server: ServerProcess
    rita: Cli  # requester
    alex: Cli  # approver


@pytest.fixture
def stack(tmp_path: Path, pg_database: str) -> Iterator[Stack]:
    server = ServerProcess(tmp_path)
    server.config.write_text(
        f'state_dir = "{server.state}"\nlisten = "127.0.0.1:{server.port}"\n' + WORKFLOWS
    )
    server.start()
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(
        agent_dir,
        server.url,
        {"app.development": pg_database, "app.production": pg_database},
        poll_wait_ms=20000,
    )
    agent.start_with_token((server.state / "agent-token").read_text().strip())
    try:
        tokens: dict[str, str] = {}
        with server.client() as admin:
            for user, role in (("rita", "requester"), ("alex", "approver")):
                created = admin.post("/api/users", json={"id": user, "roles": [role]})
                assert created.status_code == 201, created.text
                tokens[user] = created.json()["token"]
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        yield Stack(
            server,
            Cli(server.url, tokens["rita"], tmp_path),
            Cli(server.url, tokens["alex"], tmp_path),
        )
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
        assert server.stop() == 0, server.log_path.read_text()


def test_whoami_names_the_token_s_subject(stack: Stack) -> None:
    me = stack.rita.json("whoami")["data"]
    assert me["subject_id"] == "rita"
    human = stack.rita.run("whoami")
    assert human.returncode == 0, human.stderr
    assert "rita" in human.stdout


def test_an_auto_approved_query_waits_and_prints_its_result(stack: Stack, tmp_path: Path) -> None:
    sql = "SELECT 41 + 1 AS answer, 'dbward' AS name"
    envelope = stack.rita.json("execute", sql, "--database", "app", "-e", "development", "-y")
    result = envelope["data"]["result"]
    assert result["success"] is True
    assert result["result_data"]["rows"] == [{"answer": 42, "name": "dbward"}]

    human = stack.rita.run("execute", sql, "--database", "app", "-y")  # development: default
    assert human.returncode == 0, human.stderr
    assert "answer" in human.stdout
    assert "42" in human.stdout
    assert "dbward" in human.stdout
    assert "(1 row)" in human.stdout

    saved = tmp_path / "answer.csv"
    as_csv = stack.rita.run(
        "execute", sql, "--database", "app", "-y", "--result-format", "csv", "--output", str(saved)
    )
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout == "answer,name\n42,dbward\n"
    assert saved.read_text() == "answer,name\n42,dbward\n"

    unconfirmed = stack.rita.json("execute", sql, "--database", "app", expect=1)
    assert unconfirmed["error"]["code"] == "confirmation_required"
    failing = stack.rita.json("execute", "SELECT * FROM no_such_table", "-d", "app", "-y", expect=1)
    assert failing["error"]["code"] == "execution_failed"
    assert failing["data"]["result"]["success"] is False


def test_a_write_waits_for_approval_then_resume_runs_it(stack: Stack) -> None:
    rita, alex = stack.rita, stack.alex
    stack_sql = "CREATE TABLE refunds (id int PRIMARY KEY)"
    assert rita.json("execute", stack_sql, "-d", "app", "-e", "development", "-y")["ok"]

    write = "INSERT INTO refunds (id) VALUES (7)"
    pending = rita.json("execute", write, "-d", "app", "-e", "production", "-y", expect=2)
    assert pending["error"]["code"] == "pending_approval"
    assert pending["data"]["approvers"] == ["role:approver"]
    request_id = pending["data"]["id"]
    human = rita.run("execute", write, "-d", "app", "-e", "production", "-y")
    assert human.returncode == 2
    assert "requires approval from role:approver" in human.stderr

    listed = rita.json("request", "list", "--status", "pending")["data"]
    assert request_id in [entry["id"] for entry in listed]
    assert rita.json("request", "show", request_id)["data"]["status"] == "pending"
    waiting_for_alex = alex.json("request", "list", "--pending-for-me")["data"]
    assert request_id in [entry["id"] for entry in waiting_for_alex]

    refused = rita.json("request", "approve", request_id, expect=1)  # not an approver
    assert refused["error"]["code"] == "forbidden"
    not_yet = rita.json("request", "resume", request_id, expect=1)  # still pending
    assert not_yet["error"]["code"] == "invalid_transition"

    approved = alex.json("request", "approve", request_id, "--comment", "ok")["data"]
    assert approved["status"] == "approved"
    assert approved["matched_selector"] == "role:approver"

    resumed = rita.json("request", "resume", request_id)["data"]
    assert resumed["result"]["success"] is True
    assert resumed["result"]["rows_affected"] == 1

    stored = rita.json("request", "result", request_id)["data"]["result"]
    assert stored["success"] is True
    human_result = rita.run("request", "result", request_id)
    assert human_result.returncode == 0, human_result.stderr
    assert "1 row affected" in human_result.stdout
    results = rita.json("request", "results", "--limit", "10")["data"]
    assert request_id in [entry["request_id"] for entry in results]


def test_reject_cancel_and_the_error_exit_codes(stack: Stack) -> None:
    rita, alex = stack.rita, stack.alex
    write = "DELETE FROM nothing_yet WHERE id = 1"
    first = rita.json("execute", write, "-d", "app", "-e", "production", "-y", expect=2)["data"]
    second = rita.json("execute", write, "-d", "app", "-e", "production", "-y", expect=2)["data"]

    rejected = alex.json("request", "reject", first["id"], "--reason", "no WHERE")["data"]
    assert rejected["status"] == "rejected"
    cancelled = rita.json("request", "cancel", second["id"], "--reason", "changed my mind")
    assert cancelled["data"]["status"] == "cancelled"
    assert rita.json("request", "show", second["id"])["data"]["status"] == "cancelled"

    missing = rita.json("request", "show", "no-such-request", expect=1)
    assert missing["error"]["code"] == "request.not_found"
    no_result = rita.json("request", "result", "no-such-request", expect=1)
    assert no_result["error"]["code"].endswith("not_found")
    assert rita.run("request", "approve").returncode == 2  # usage: the ID is missing
    assert rita.run("execute", "--database", "app").returncode == 2  # usage: no SQL
    assert rita.run("execute", "SELECT 1").returncode == 2  # usage: no --database
    nobody = Cli(stack.server.url, "dbw_" + "x" * 32, rita.cwd)
    assert nobody.json("whoami", expect=1)["error"]["code"] == "unauthorized"


EXECUTE_SELECT_2 = ("execute", "SELECT 2", "-d", "app", "-e", "staging", "-y")
#: Runs argv[1:] with SIGINT at its default, as from a terminal, even when the suite itself
#: runs with SIGINT ignored (started in the background by a non-interactive shell), which
#: a child would otherwise inherit.
_SIGINT_BY_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def test_a_request_no_agent_serves_times_out_or_is_interrupted(stack: Stack) -> None:
    rita = stack.rita
    timed_out = rita.json(
        "execute", "SELECT 1", "-d", "app", "-e", "staging", "-y", "--timeout", "2", expect=124
    )
    assert timed_out["error"]["code"] == "timeout"
    assert timed_out["data"]["queue_hint"] == "no_agents"

    waiting = subprocess.Popen(
        [sys.executable, "-c", _SIGINT_BY_DEFAULT, str(DBWARD), *EXECUTE_SELECT_2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=rita.env(),
        cwd=rita.cwd,
    )
    try:
        with stack.server.client() as admin:

            def dispatched() -> bool:
                listing = admin.get("/api/requests", params={"status": "dispatched"}).json()
                return len(listing["requests"]) == 2

            wait_until(dispatched, 30, "the second staging request dispatched")
        waiting.send_signal(signal.SIGINT)
        stdout, stderr = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 130, (stdout, stderr)
    assert "interrupted: request" in stderr, (stdout, stderr)


def test_an_escalated_query_is_approved_and_its_rows_come_back(stack: Stack) -> None:
    rita, alex = stack.rita, stack.alex
    escalated = "SELECT pg_sleep(0.1), 42 AS answer"
    pending = rita.json("execute", escalated, "-d", "app", "-e", "production", "-y", expect=2)
    request_id = pending["data"]["id"]
    shown = rita.json("request", "show", request_id)["data"]
    assert shown["operation"] == "execute_dml"  # pg_sleep makes the server treat it as a write
    alex.json("request", "approve", request_id, "--comment", "ok")

    resumed = rita.json("request", "resume", request_id)["data"]["result"]
    assert resumed["success"] is True and resumed["rows_affected"] == 1
    assert [row["answer"] for row in resumed["result_data"]["rows"]] == [42]

    with stack.server.client() as admin:
        content = admin.get(f"/api/requests/{request_id}/result/content")
    assert content.status_code == 200, content.text
    stored = content.json()
    assert stored["rows_affected"] == 1 and stored["truncated"] is False
    assert stored["result_data"]["rows"] == [{"pg_sleep": "", "answer": 42}]
    assert stored["result_data"]["columns"][1] == {"name": "answer", "type": "int4"}

    table = rita.run("request", "result", request_id)
    assert table.returncode == 0, table.stderr
    assert "answer" in table.stdout and "42" in table.stdout
    assert table.stdout.endswith("(1 row)\n1 row affected\n")
    as_csv = rita.run("request", "result", request_id, "--result-format", "csv")
    assert as_csv.stdout == "pg_sleep,answer\n,42\n"
    assert "note: 1 row affected" in as_csv.stderr


def test_insert_returning_gives_back_the_new_ids(stack: Stack) -> None:
    rita = stack.rita
    rita.json(
        "execute", "CREATE TABLE tickets (id serial PRIMARY KEY, title text)", "-d", "app", "-y"
    )
    envelope = rita.json(
        "execute",
        "INSERT INTO tickets (title) VALUES ('a'), ('b') RETURNING id",
        "-d",
        "app",
        "-y",
    )
    result = envelope["data"]["result"]
    assert result["rows_affected"] == 2
    assert result["result_data"]["rows"] == [{"id": 1}, {"id": 2}]
    vertical = rita.run(
        "execute", "DELETE FROM tickets WHERE id = 2 RETURNING title", "-d", "app", "-y",
        "--result-format", "vertical",
    )  # fmt: skip
    assert vertical.returncode == 0, vertical.stderr
    assert "title | b" in vertical.stdout
    assert vertical.stdout.endswith("1 row affected\n")


def test_execute_sends_ticket_repo_sharing_idempotency_and_no_store(stack: Stack) -> None:
    rita, alex = stack.rita, stack.alex
    sql = "SELECT 7 AS seven"
    options = (
        "-d", "app", "-y", "--ticket", "OPS-9", "--repo", "https://git.example/app",
        "--idempotency-key", "seven-1", "--share-with", "user:alex", "--no-result-store",
    )  # fmt: skip
    first = rita.json("execute", sql, *options)["data"]
    assert first["result"]["result_data"]["rows"] == [{"seven": 7}]  # relayed, not stored
    request_id = first["request"]["id"]
    shown = rita.json("request", "show", request_id)["data"]
    assert shown["metadata"] == {"ticket": "OPS-9", "repo": "https://git.example/app"}
    unstored = rita.json("request", "result", request_id, expect=1)
    assert unstored["error"]["code"] == "request.gone"
    again = rita.json("execute", sql, *options)["data"]  # the same key: the same request
    assert again["request"]["id"] == request_id

    shared = rita.json(
        "execute", "SELECT 8 AS eight", "-d", "app", "-y", "--share-with", "user:alex"
    )
    shared_id = shared["data"]["request"]["id"]
    assert alex.json("request", "result", shared_id)["data"]["result"]["success"] is True

    usage = rita.run("execute", sql, "-d", "app", "--allow-ddl", "-y")
    assert usage.returncode == 2 and "--emergency" in usage.stderr
    refused = rita.json("execute", "SELECT 1", "-d", "app", "--emergency", "-y", expect=1)
    assert refused["error"]["code"] == "forbidden"  # a requester may not break glass


def test_the_client_config_supplies_database_environment_and_merges_the_global_file(
    stack: Stack, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".config" / "dbward").mkdir(parents=True)
    (home / ".config" / "dbward" / "config.toml").write_text(
        f'[server]\nurl = "{stack.server.url}"\ntoken = "{stack.rita.token}"\n'
    )
    team = tmp_path / "team.toml"
    team.write_text('default_database = "app"\ndefault_environment = "production"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DBWARD_")}
    env = {**clean, "HOME": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DBWARD), *args, "--format", "json"], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=90, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    alone = run("execute", "SELECT 1", "--config", str(team), "-y")
    assert alone.returncode == 1
    assert json.loads(alone.stdout)["error"]["code"] == "config"
    merged = run("execute", "SELECT 1", "--config", str(team), "--merge-global", "-y")
    assert merged.returncode == 2, merged  # app/production waits for an approver
    assert json.loads(merged.stdout)["data"]["approvers"] == ["role:approver"]
    dev = run(
        "execute", "SELECT 1", "--config", str(team), "--merge-global", "-e", "development", "-y"
    )
    assert dev.returncode == 0, dev
    assert json.loads(dev.stdout)["data"]["request"]["environment"] == "development"

    team.write_text('default_database = "app"\ncolour = "blue"\n')
    unknown = run("execute", "SELECT 1", "--config", str(team), "--merge-global", "-y")
    assert unknown.returncode == 1
    assert f"{team}: unknown key colour" in json.loads(unknown.stdout)["error"]["message"]


def test_request_list_pages_through_the_requests(stack: Stack) -> None:
    rita = stack.rita
    ids = [
        rita.json(
            "execute", "DELETE FROM x WHERE id = 1", "-d", "app", "-e", "production", "-y", expect=2
        )["data"]["id"]
        for _ in range(3)
    ]
    first = rita.json("request", "list", "--limit", "2")["data"]
    second = rita.json("request", "list", "--limit", "2", "--offset", "2")["data"]
    assert [r["id"] for r in first + second] == list(reversed(ids))
    human = rita.run("request", "list", "--limit", "2")
    assert human.returncode == 0, human.stderr
    assert "showing 1-2 of 3; next: --offset 2" in human.stderr
    last = rita.run("request", "list", "--limit", "2", "--offset", "2")
    assert "showing" not in last.stderr
