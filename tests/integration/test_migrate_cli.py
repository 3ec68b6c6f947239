"""`dbward migrate …` through real `dbward server` and `dbward agent` processes.

On PostgreSQL and on MariaDB (a fresh database each): migrations are created with the
CLI, applied, listed, rolled back and listed again; the target database shows each step.
A detail whose SQL no longer matches its `dir_sha256` is refused with 400, and a second
migration of one database cannot be claimed while the first runs. `migrate repair` runs on an
agent whose `operations` allow it, and only its one row of `schema_migrations` changes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.shared.migration_files import build_detail, detail_json, parse_migration_files
from tests.integration.agent_process import DBWARD, AgentProcess, wait_until
from tests.integration.test_end_to_end import ServerProcess
from tests.integration.test_production_workflow import _mariadb, _postgres

pytestmark = pytest.mark.integration

CLI_TIMEOUT_SECS = 120


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path).start()  # app/pg and app/my, auto-approve always
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


@pytest.fixture(params=["pg", "my"])
def target(
    request: pytest.FixtureRequest,
) -> tuple[str, str, Callable[[str], list[tuple[Any, ...]]]]:
    """(environment, database URL, a function running SQL on it) of one engine."""
    if request.param == "pg":
        url: str = request.getfixturevalue("pg_database")
        return "pg", url, _postgres(url)
    url = request.getfixturevalue("mysql_database")
    return "my", url, _mariadb(url)


def _requester(server: ServerProcess) -> str:
    with server.client() as admin:
        created = admin.post("/api/users", json={"id": "rita", "roles": ["requester"]})
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    return token


def _cli(
    cwd: Path, env: dict[str, str], *args: str, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(DBWARD), "migrate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECS,
        check=False,
    )
    assert done.returncode == expect, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    envelope: dict[str, Any] = json.loads(lines[0])
    return envelope


def _tables(run: Callable[[str], list[tuple[Any, ...]]], environment: str) -> set[str]:
    schema = "current_schema()" if environment == "pg" else "DATABASE()"
    rows = run(f"SELECT table_name FROM information_schema.tables WHERE table_schema = {schema}")
    return {str(row[0]).lower() for row in rows}


def test_migrations_are_created_applied_listed_and_rolled_back_through_the_cli(
    tmp_path: Path,
    server: ServerProcess,
    target: tuple[str, str, Callable[[str], list[tuple[Any, ...]]]],
) -> None:
    environment, url, run = target
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    agent = AgentProcess(agent_dir, server.url, {f"app.{environment}": url}, poll_wait_ms=20000)
    agent.start_with_token((server.state / "agent-token").read_text().strip())
    try:
        env = {**os.environ, "DBWARD_SERVER_URL": server.url, "DBWARD_TOKEN": _requester(server)}
        work = tmp_path / "project"
        work.mkdir()
        scope = ["--database", "app", "-e", environment]

        first = Path(_cli(work, env, "create", "add_users").stdout.strip())
        second = Path(
            _json(_cli(work, env, "create", "add_orders", "--format", "json"))["data"]["path"]
        )
        assert first.parent == second.parent == Path("migrations")
        (work / first).write_text(
            "-- migrate:up\nCREATE TABLE users (id int PRIMARY KEY);\n"
            "-- migrate:down\nDROP TABLE users;\n"
        )
        (work / second).write_text(
            "-- migrate:up\nCREATE TABLE orders (id int PRIMARY KEY, user_id int);\n\n"
            "-- migrate:down\nDROP TABLE orders;\n"
        )
        v1, v2 = first.name.split("_")[0], second.name.split("_")[0]
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")

        status = _json(_cli(work, env, "status", *scope, "--format", "json"))
        assert status["ok"] is True
        assert status["data"]["migrations"] == [
            {"version": v1, "file": first.name, "applied": False},
            {"version": v2, "file": second.name, "applied": False},
        ]

        # Without -y off a terminal nothing is submitted.
        refused = _json(_cli(work, env, "up", *scope, "--format", "json", expect=1))
        assert refused["error"]["code"] == "confirmation_required"

        one = _cli(work, env, "up", *scope, "--count", "1", "-y")
        assert one.stdout.strip() == f"Applied 1 migration(s): {v1}"
        assert {"users", "schema_migrations"} <= _tables(run, environment)
        assert "orders" not in _tables(run, environment)

        rest = _json(_cli(work, env, "up", *scope, "-y", "--format", "json"))
        assert rest["data"]["result"] == {"applied": [v2]}
        assert "orders" in _tables(run, environment)
        assert _cli(work, env, "up", *scope, "-y").stdout.strip() == (
            "Nothing to apply: every migration is applied."
        )

        table = _cli(work, env, "status", *scope)
        lines = [line.split() for line in table.stdout.splitlines() if line.strip()]
        assert [v1, "applied", first.name] in lines and [v2, "applied", second.name] in lines
        assert "2 applied, 0 pending" in table.stderr

        back = _cli(work, env, "down", *scope, "-y")
        assert back.stdout.strip() == f"Reverted 1 migration(s): {v2}"
        assert "orders" not in _tables(run, environment)
        status = _json(_cli(work, env, "status", *scope, "--format", "json"))
        assert status["data"]["applied_versions"] == [v1]
        assert [row["applied"] for row in status["data"]["migrations"]] == [True, False]

        all_back = _json(_cli(work, env, "down", *scope, "--count", "5", "-y", "--format", "json"))
        assert all_back["data"]["result"] == {"reverted": [v1]}
        assert "users" not in _tables(run, environment)

        # The audit trail names the versions each run applied or reverted.
        with server.client() as admin:
            events = admin.get(
                "/api/audit/events", params={"event_type": "execution.completed"}
            ).json()["events"]
        outcomes = [
            {
                key: event["metadata"][key]
                for key in ("applied", "reverted")
                if key in event["metadata"]
            }
            for event in events
            if event["metadata"].get("applied") or event["metadata"].get("reverted")
        ]
        assert {"applied": [v1]} in outcomes and {"applied": [v2]} in outcomes
        assert {"reverted": [v2]} in outcomes and {"reverted": [v1]} in outcomes
    finally:
        agent.signal()
        agent.wait(30)


def test_a_detail_changed_after_its_hash_was_computed_is_refused(
    tmp_path: Path, server: ServerProcess
) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "20260501120000_users.sql").write_text(
        "-- migrate:up\nCREATE TABLE users (id int);\n-- migrate:down\nDROP TABLE users;\n"
    )
    files = [(p.name, p.read_text()) for p in directory.iterdir()]
    detail = build_detail(parse_migration_files(files), "up")
    # The file changes after dir_sha256 was computed, and the detail carries the new SQL.
    detail["migrations"] = [
        {"version": "20260501120000", "sql": "DROP TABLE accounts;", "transactional": True}
    ]
    body = {"database": "app", "environment": "pg", "operation": "migrate_up"}
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {_requester(server)}"}
    ) as client:
        refused = client.post("/api/requests", json={**body, "detail": detail_json(detail)})
        assert refused.status_code == 400, refused.text
        assert "dir_sha256 does not match" in refused.json()["error"]
        listed = client.get("/api/requests").json()
    assert listed["requests"] == []


def _applied(run: Callable[[str], list[tuple[Any, ...]]]) -> list[str]:
    return sorted(str(row[0]) for row in run("SELECT version FROM schema_migrations"))


def test_repair_marks_applied_and_removes_a_version_on_an_agent_that_allows_it(
    tmp_path: Path,
    server: ServerProcess,
    target: tuple[str, str, Callable[[str], list[tuple[Any, ...]]]],
) -> None:
    environment, url, run = target
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    operations = ["migrate_up", "migrate_down", "migrate_status", "migrate_repair"]
    agent = AgentProcess(
        agent_dir,
        server.url,
        {f"app.{environment}": url},
        poll_wait_ms=20000,
        operations=operations,
    )
    agent.start_with_token((server.state / "agent-token").read_text().strip())
    try:
        with server.client() as admin:
            created = admin.post("/api/users", json={"id": "olga", "roles": ["operator"]})
        assert created.status_code == 201, created.text
        env = {
            **os.environ,
            "DBWARD_SERVER_URL": server.url,
            "DBWARD_TOKEN": created.json()["token"],
        }
        work = tmp_path / "project"
        (work / "migrations").mkdir(parents=True)
        (work / "migrations" / "20260101000000_users.sql").write_text(
            "-- migrate:up\nCREATE TABLE users (id int PRIMARY KEY);\n"
            "-- migrate:down\nDROP TABLE users;\n"
        )
        scope = ["--database", "app", "-e", environment]
        wait_until(agent.ready.exists, 30, "the agent's readiness probe")
        _cli(work, env, "up", *scope, "-y")
        assert _applied(run) == ["20260101000000"]

        def repair(action: str, version: str) -> dict[str, Any]:
            return _json(
                _cli(
                    work, env, "repair", "--action", action, "--version", version,
                    "--emergency", "--reason", "record out of step", *scope,
                    "--ticket", "OPS-7", "-y", "--format", "json",
                )
            )  # fmt: skip

        marked = repair("mark-applied", "20260202000000")
        assert marked["ok"] is True and marked["data"]["status"] == "executed"
        assert _applied(run) == ["20260101000000", "20260202000000"]
        status = _json(_cli(work, env, "status", *scope, "--format", "json"))
        assert status["data"]["applied_versions"] == ["20260101000000", "20260202000000"]

        repair("remove", "20260101000000")
        assert _applied(run) == ["20260202000000"]
        assert "users" in _tables(run, environment)  # repair records, it never runs SQL

        with server.client() as admin:
            listed = admin.get("/api/requests", params={"limit": "10"}).json()["requests"]
            repairs = [r for r in listed if r["operation"] == "migrate_repair"]
            assert [r["status"] for r in repairs] == ["executed", "executed"]
            shown = admin.get(f"/api/requests/{repairs[0]['id']}").json()
        assert shown["metadata"] == {"ticket": "OPS-7"}
    finally:
        agent.signal()
        agent.wait(30)
