"""`dbward agents`, `databases`, `group`, `init` and `doctor` against a real `dbward server`
process (and a real agent on PostgreSQL), `--format json` output parsed (docs/server.md §8.4).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entrypoints.admin.doctor import check_agent_config
from tests.integration.agent_process import DBWARD, AgentProcess, free_port, wait_until
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

GROUPS = """
[[auth.roles]]
name = "dba"
permissions = ["request.view:any", "schema.read"]
[[auth.groups]]
name = "dbas"
roles = ["dba"]
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    # app.pg is served by the test's agent; app.my by nobody.
    process.config.write_text(
        process.config.read_text().replace("[[workflows]]", GROUPS + "[[workflows]]")
    )
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment without the caller's dbward settings, HOME pointing at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBWARD_")}
    return {**env, "HOME": str(home), **extra}


def dbward(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DBWARD), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def json_line(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = result.stdout.splitlines()
    assert len(lines) == 1, (result.stdout, result.stderr)
    envelope: dict[str, Any] = json.loads(lines[0])
    return envelope


def _checks(envelope: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in envelope["data"]["checks"]}


def test_agents_and_databases_show_the_agent_serving_each_scope(
    tmp_path: Path, server: ServerProcess, pg_database: str
) -> None:
    env = _env(tmp_path, DBWARD_SERVER_URL=server.url, DBWARD_TOKEN=server.admin_token)
    created = dbward(
        "token", "create", "--subject", "ops-agent", "--subject-type", "agent",
        "--role", "agent-default", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(agent_dir, server.url, {"app.pg": pg_database}, agent_id="ops-agent")
    agent.start_with_token(created.stdout.strip())
    try:
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")

        listed = dbward("agents", "--format", "json", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        envelope = json_line(listed)
        assert envelope["ok"] is True
        (entry,) = envelope["data"]
        assert entry["id"] == "ops-agent"
        assert entry["status"] == "healthy"
        assert entry["capabilities"]["scopes"] == [{"database": "app", "environment": "pg"}]
        assert entry["degraded_scopes"] == []

        table = dbward("agents", cwd=tmp_path, env=env)
        assert table.returncode == 0, table.stderr
        assert "ops-agent" in table.stdout and "app/pg" in table.stdout

        served = dbward("databases", "--format", "json", cwd=tmp_path, env=env)
        assert served.returncode == 0, served.stderr
        pairs = {
            (d["database"], d["environment"]): [a["id"] for a in d["agents"]]
            for d in json_line(served)["data"]
        }
        assert pairs == {("app", "pg"): ["ops-agent"], ("app", "my"): []}
        table = dbward("databases", cwd=tmp_path, env=env)
        assert "ops-agent (healthy" in table.stdout, table.stdout
        assert "have no agent serving them" in table.stderr
    finally:
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0, agent.log()
        agent.kill()


def test_group_list_and_show(tmp_path: Path, server: ServerProcess) -> None:
    env = _env(tmp_path, DBWARD_SERVER_URL=server.url, DBWARD_TOKEN=server.admin_token)
    added = dbward("user", "add", "alice", "--group", "dbas", cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr

    listed = dbward("group", "list", "--format", "json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    groups = {g["name"]: g for g in json_line(listed)["data"]}
    assert groups["dbas"]["roles"] == ["dba"]
    assert groups["dbas"]["members"] == ["alice"]

    shown = dbward("group", "--format", "json", "show", "dbas", cwd=tmp_path, env=env)
    assert json_line(shown)["data"] == {"name": "dbas", "roles": ["dba"], "members": ["alice"]}
    human = dbward("group", "show", "dbas", cwd=tmp_path, env=env)
    assert human.returncode == 0 and "alice" in human.stdout

    missing = dbward("group", "show", "nobody", "--format", "json", cwd=tmp_path, env=env)
    assert missing.returncode == 1
    envelope = json_line(missing)
    assert envelope["ok"] is False and envelope["error"]["code"].endswith("not_found")


def test_init_writes_a_private_config_that_doctor_finds_healthy(
    tmp_path: Path, server: ServerProcess, pg_database: str
) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    env = _env(home)
    written = dbward(
        "init", "--url", server.url, "--token", server.admin_token, "--format", "json",
        cwd=project, env=env,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    config = project / "dbward.toml"
    assert json_line(written)["data"] == {
        "path": str(config), "server_url": server.url, "token_saved": True,
    }  # fmt: skip
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert server.admin_token not in written.stdout + written.stderr

    again = dbward("init", "--url", "http://127.0.0.1:1", "--format", "json", cwd=project, env=env)
    assert again.returncode == 1
    assert json_line(again)["error"]["code"] == "exists"
    assert server.url in config.read_text()

    glob = dbward("init", "--global", "--url", server.url, "--no-token", cwd=project, env=env)
    assert glob.returncode == 0, glob.stderr
    global_config = home / ".config" / "dbward" / "config.toml"
    assert stat.S_IMODE(global_config.stat().st_mode) == 0o600
    assert "token" not in global_config.read_text().split("[server]")[1]

    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(
        f'[server]\nurl = "{server.url}"\nagent_token = "dbw_{"ab" * 16}"\n'
        f'[databases.app.pg]\nurl = "{pg_database}"\n'
    )
    healthy = dbward("doctor", "--agent-config", str(agent_config), "--format", "json",
                     cwd=project, env=env)  # fmt: skip
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    envelope = json_line(healthy)
    assert envelope["ok"] is True and envelope["data"]["issues"] == 0
    checks = _checks(envelope)
    assert {name: c["status"] for name, c in checks.items()} == {
        "client config": "ok", "server reachable": "ok", "server version": "ok",
        "server ready": "ok", "token": "ok", "agent config": "ok", "database app/pg": "ok",
    }  # fmt: skip
    assert "admin" in checks["token"]["detail"]

    human = dbward("doctor", cwd=project, env=env)
    assert human.returncode == 0, human.stdout + human.stderr
    assert "✓ token" in human.stdout and "all checks passed" in human.stderr


def test_doctor_exits_2_on_a_bad_token_an_unreachable_server_and_an_unreachable_database(
    tmp_path: Path, server: ServerProcess
) -> None:
    bad_token = _env(tmp_path, DBWARD_SERVER_URL=server.url, DBWARD_TOKEN="dbw_" + "0" * 32)
    result = dbward("doctor", "--format", "json", cwd=tmp_path, env=bad_token)
    assert result.returncode == 2, result.stdout + result.stderr
    envelope = json_line(result)
    assert envelope["ok"] is False and envelope["error"]["code"] == "doctor_issues"
    checks = _checks(envelope)
    assert checks["server reachable"]["status"] == "ok"
    assert checks["token"]["status"] == "fail"

    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = _env(tmp_path, DBWARD_SERVER_URL=nowhere, DBWARD_TOKEN=server.admin_token)
    result = dbward("doctor", "--format", "json", cwd=tmp_path, env=unreachable)
    assert result.returncode == 2
    checks = _checks(json_line(result))
    assert checks["server reachable"]["status"] == "fail"
    assert nowhere in checks["server reachable"]["detail"]
    assert checks["token"]["status"] == "skip"
    human = dbward("doctor", cwd=tmp_path, env=unreachable)
    assert human.returncode == 2 and "✗ server reachable" in human.stdout

    secret = "s3cret-Pa55"
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(
        f'[server]\nurl = "{server.url}"\nagent_token = "dbw_{"ab" * 16}"\n'
        f'[databases.app.pg]\nurl = "postgresql://dbward:{secret}@127.0.0.1:{free_port()}/app"\n'
    )
    good = _env(tmp_path, DBWARD_SERVER_URL=server.url, DBWARD_TOKEN=server.admin_token)
    result = dbward("doctor", "--agent-config", str(agent_config), "--timeout", "2",
                    "--format", "json", cwd=tmp_path, env=good)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert secret not in result.stdout + result.stderr
    checks = _checks(json_line(result))
    assert checks["token"]["status"] == "ok"
    assert checks["agent config"]["status"] == "ok"
    database = checks["database app/pg"]
    assert database["status"] == "fail"
    assert "cannot connect" in database["detail"] and "dbward:***@" in database["detail"]

    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\n")
    result = dbward("doctor", "--agent-config", str(broken), "--format", "json",
                    cwd=tmp_path, env=good)  # fmt: skip
    assert result.returncode == 2
    assert _checks(json_line(result))["agent config"]["status"] == "fail"


def test_doctor_checks_an_agent_config_in_process(tmp_path: Path, pg_database: str) -> None:
    """The agent-config checks in this process: one database reachable, one not (its
    password never shown), and a config file that does not exist."""
    dead = f"postgresql://dbward:pw-s3cret@127.0.0.1:{free_port()}/app"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[server]\nurl = "http://127.0.0.1:{free_port()}"\nagent_token = "dbw_{"ab" * 16}"\n'
        f'[databases.app.up]\nurl = "{pg_database}"\n[databases.app.down]\nurl = "{dead}"\n'
    )
    checks = {check.name: check for check in check_agent_config(config, 2.0)}
    assert checks["agent config"].status == "ok"
    assert checks["database app/up"].status == "ok"
    down = checks["database app/down"]
    assert down.status == "fail" and "pw-s3cret" not in down.detail
    assert "dbward:***@" in down.detail

    missing = check_agent_config(tmp_path / "nope.toml", 2.0)
    assert [check.status for check in missing] == ["fail"]
