"""`dbward preflight` and `dbward policy resolve` against real processes: a `dbward server`,
a `dbward agent` on a real PostgreSQL database, and the CLI with `--format json`.

The plan comes from the live agent through a preflight job; a scope no agent serves still
gets an answer, with the EXPLAIN `unavailable`. Nothing is ever created.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.agent_process import AgentProcess, wait_until
from tests.integration.test_cli_operations import _env, dbward, json_line
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """app/pg is served by the test's agent, app/my by nobody."""
    process = ServerProcess(tmp_path).start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def test_preflight_gets_a_plan_from_the_live_agent_and_answers_without_one(
    tmp_path: Path, server: ServerProcess, pg_database: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as connection:
        connection.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
    env = _env(tmp_path, DBWARD_SERVER_URL=server.url, DBWARD_TOKEN=server.admin_token)
    created = dbward(
        "token", "create", "--subject", "pf-agent", "--subject-type", "agent",
        "--role", "agent-default", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(agent_dir, server.url, {"app.pg": pg_database}, poll_wait_ms=20000)
    agent.start_with_token(created.stdout.strip())
    try:
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        sql = "SELECT * FROM t WHERE id = 1"
        result = dbward(
            "preflight", sql, "-d", "app", "-e", "pg", "--explain-timeout", "8000",
            "--format", "json", cwd=tmp_path, env=env,
        )  # fmt: skip
        assert result.returncode == 0, (result.stdout, result.stderr)
        report = json_line(result)["data"]
        assert report["status"] == "requestable"
        assert report["explain"]["status"] == "ok", (report["explain"], agent.log())
        (plan,) = report["explain"]["plans"]
        assert plan["plan"][0]["Plan"]["Relation Name"] == "t"

        # app/my: registered, but no agent serves it.
        alone = dbward(
            "preflight", sql, "-d", "app", "-e", "my", "--format", "json", cwd=tmp_path, env=env
        )
        assert alone.returncode == 0, alone.stderr
        assert json_line(alone)["data"]["explain"]["status"] == "unavailable"

        blocked = dbward(
            "preflight", "GRANT ALL ON t TO nobody", "-d", "app", "-e", "pg",
            "--format", "json", cwd=tmp_path, env=env,
        )  # fmt: skip
        assert blocked.returncode == 1
        envelope = json_line(blocked)
        assert envelope["ok"] is False and envelope["error"]["code"] == "blocked"
        assert envelope["data"]["explain"]["status"] == "skipped"

        human = dbward("preflight", sql, "-d", "app", "-e", "pg", cwd=tmp_path, env=env)
        assert human.returncode == 0, human.stderr
        assert "requestable" in human.stdout and "explain: ok" in human.stdout

        resolved = dbward(
            "policy", "resolve", "app", "pg", "--format", "json", cwd=tmp_path, env=env
        )
        assert resolved.returncode == 0, resolved.stderr
        previews = {
            entry["operation"]: entry["decision_preview"]
            for entry in json_line(resolved)["data"]["resolutions"]
        }
        assert previews["execute_select"] == "auto_approved"
        table = dbward("policy", "resolve", "app", "pg", cwd=tmp_path, env=env)
        assert "auto_approved" in table.stdout and "execute_dml" in table.stdout

        listed = dbward("request", "list", "--format", "json", cwd=tmp_path, env=env)
        assert json_line(listed)["data"] == [] or json_line(listed)["data"].get("requests") == []
    finally:
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0, agent.log()
        agent.kill()
