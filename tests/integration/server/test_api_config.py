"""The read-only configuration API end to end: workflows, policies, roles, groups, databases.

The real FastAPI app (identity and configuration routers) over the real store on SQLite
and PostgreSQL, configured from a server.toml through the real loader, so what the file
says is what the API shows.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from adapters.config.server import load_server_settings
from adapters.crypto.ed25519_signer import Ed25519Signer
from adapters.files.secrets import LocalSecretFiles
from adapters.http_api.app import create_app
from adapters.http_api.routes_config import ConfigUseCases, build_config_router
from adapters.http_api.routes_identity import build_identity_router
from adapters.store.engine import create_store_engine
from adapters.store.migrations import migrate
from adapters.store.sql_store import SqlStore
from application.server.configuration.databases import ListDatabases
from application.server.configuration.groups import ListGroups
from application.server.configuration.policies import ListPolicies
from application.server.configuration.roles import ListRoles
from application.server.configuration.workflows import ListWorkflows
from application.server.identity.audit_integrity import AuditIntegrity
from application.server.identity.audit_queries import AuditQueries
from application.server.identity.authentication import Authenticator
from application.server.identity.bootstrap import BootstrapAction, Bootstrapper
from application.server.identity.roles import RoleDirectory
from application.server.identity.tokens import TokenService
from application.server.identity.users import UserService
from application.server.ports.work.agents import AgentUpsert
from application.server.readiness import StoreReadiness
from domain.server.agent_registry import AgentRecord, AgentState
from domain.shared.scopes import Scope
from tests.fakes.clock import FakeClock
from tests.server_keys import kek_cipher

pytestmark = pytest.mark.integration

SERVER_TOML = """
state_dir = "state"

[[databases]]
name = "app"
environments = ["staging", "production"]

[[databases]]
name = "billing"
environments = ["production"]

[[workflows]]
database = "app"
environment = "staging"
[workflows.auto_approve]
mode = "always"

[[workflows]]
database = "app"
environment = "production"
operations = ["execute_dml"]
require_reason = true
pending_ttl_secs = 600
[[workflows.steps]]
mode = "any"
[[workflows.steps.approvers]]
role = "dba"
min = 2
[[workflows.steps.approvers]]
group = "oncall"
[[workflows.steps]]
[[workflows.steps.approvers]]
user = "cto"

[[execution_policies]]
database = "app"
environment = "production"
max_executions = 3
retry_on_failure = true
max_rows = 500

[[result_policies]]
environment = "production"
retention_days = 7
delivery_mode = "stream"
access = ["role:dba"]

[[sql_review]]
database = "app"
environment = "production"
truncate = "warn"
create_sequence = "block"

[[sql_review]]
no_where_update = "warn"

[auth]
[[auth.roles]]
name = "dba"
permissions = ["request.view:any", "workflow.read"]
environments = ["production"]

[[auth.groups]]
name = "oncall"
roles = ["approver"]

[[auth.groups]]
name = "empty"
roles = ["requester"]
"""

USERS = ("admin", "requester", "approver", "operator")
CALLERS = (*USERS, "agent", "anonymous")
AGENT_REFUSAL = {"error": "agent tokens cannot access this endpoint", "code": "forbidden"}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dbward.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    made = create_store_engine(url)
    migrate(made)
    yield made
    made.dispose()


@dataclass
class Api:
    client: TestClient
    clock: FakeClock
    store: SqlStore
    tokens: dict[str, str]

    def get(self, path: str, caller: str) -> Any:
        token = self.tokens.get(caller)
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.client.get(path, headers=headers)

    def send(self, method: str, path: str, caller: str) -> Any:
        return self.client.request(
            method, path, headers={"Authorization": f"Bearer {self.tokens[caller]}"}
        )


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> Iterator[Api]:
    config = tmp_path / "server.toml"
    config.write_text(SERVER_TOML)
    settings = load_server_settings(config, {})
    clock = FakeClock()
    store = SqlStore(engine)

    def new_id() -> str:
        return str(uuid.uuid4())

    roles = RoleDirectory(settings.auth)
    authenticator = Authenticator(store, clock, new_id, roles)
    users = UserService(store, clock, new_id, secrets.token_bytes, roles)
    tokens = TokenService(store, clock, new_id, secrets.token_bytes, settings, roles)
    bootstrapper = Bootstrapper(
        store, clock, new_id, secrets.token_bytes, LocalSecretFiles(), kek_cipher()
    )
    assert bootstrapper.bootstrap(settings.state_dir).action is BootstrapAction.CREATED
    app = create_app(
        routers=[
            build_identity_router(
                tokens=tokens,
                users=users,
                audit=AuditQueries(store),
                audit_integrity=AuditIntegrity(store=store, signer=Ed25519Signer(bytes(32))),
                readiness=StoreReadiness(store),
                min_agent_version=settings.min_agent_version,
                version="test",
            ),
            build_config_router(
                ConfigUseCases(
                    workflows=ListWorkflows(settings=settings),
                    policies=ListPolicies(settings=settings),
                    roles=ListRoles(roles=roles),
                    groups=ListGroups(store=store, auth=settings.auth),
                    databases=ListDatabases(store=store, settings=settings, clock=clock),
                )
            ),
        ],
        authenticate=authenticator.authenticate,
        version="test",
    )
    admin_token = (settings.state_dir / "admin-token").read_text()
    with TestClient(app) as client:
        made = Api(client, clock, store, {"admin": admin_token})
        for role in ("requester", "approver", "operator"):
            created = client.post(
                "/api/users",
                json={"id": f"{role}-1", "roles": [role]},
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            assert created.status_code == 201, created.text
            made.tokens[role] = created.json()["token"]
        made.tokens["agent"] = (settings.state_dir / "agent-token").read_text()
        yield made


# --- who may read what ---------------------------------------------------------------------

WORKFLOW_READERS = frozenset(USERS)
USER_READERS = frozenset({"admin"})
REQUEST_VIEWERS = frozenset(USERS)

MATRIX = (
    ("/api/workflows", WORKFLOW_READERS),
    ("/api/execution-policies", WORKFLOW_READERS),
    ("/api/result-policies", WORKFLOW_READERS),
    ("/api/result-policies/rp:*:production", WORKFLOW_READERS),
    ("/api/sql-review-policies", WORKFLOW_READERS),
    ("/api/roles", WORKFLOW_READERS),
    ("/api/groups", USER_READERS),
    ("/api/groups/oncall", USER_READERS),
    ("/api/databases", REQUEST_VIEWERS),
)


def test_authorization_matrix(api: Api) -> None:
    mismatches: list[str] = []
    for path, allowed in MATRIX:
        for caller in CALLERS:
            response = api.get(path, caller)
            expected = 200 if caller in allowed else 401 if caller == "anonymous" else 403
            if response.status_code != expected:
                mismatches.append(f"{path} as {caller}: {response.status_code} != {expected}")
            assert response.headers["content-type"].startswith("application/json")
            if caller == "agent":
                assert response.json() == {**AGENT_REFUSAL, "hint": None}
    assert not mismatches, "\n".join(mismatches)


def test_a_user_without_user_read_sees_no_group(api: Api) -> None:
    refused = api.get("/api/groups/oncall", "operator")
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"


# --- what they show ------------------------------------------------------------------------


def test_workflows_as_configured(api: Api) -> None:
    workflows = api.get("/api/workflows", "requester").json()["workflows"]
    staging, production = workflows
    assert staging["auto_approve"]["mode"] == "always" and staging["steps"] == []
    assert staging["operations"] == []
    assert production["id"].startswith("wf:app:production:")
    assert production["operations"] == ["execute_dml"]
    assert production["require_reason"] is True and production["pending_ttl_secs"] == 600
    assert production["auto_approve"] is None
    assert production["steps"] == [
        {
            "mode": "any",
            "approvers": [
                {"selector": "role:dba", "min": 2},
                {"selector": "group:oncall", "min": 1},
            ],
        },
        {"mode": "all", "approvers": [{"selector": "user:cto", "min": 1}]},
    ]
    assert production["source"] == "config"


def test_execution_policies_with_the_default(api: Api) -> None:
    body = api.get("/api/execution-policies", "approver").json()
    [policy] = body["execution_policies"]
    assert policy["id"] == "ep:app:production"
    assert (policy["max_executions"], policy["retry_on_failure"], policy["max_rows"]) == (
        3,
        True,
        500,
    )
    assert policy["execution_window_secs"] == 86400  # effective default filled in
    assert body["default"]["max_executions"] == 1
    assert body["default"]["statement_timeout_secs"] == 30
    assert body["default"]["source"] == "default"


def test_result_policies_with_the_default(api: Api) -> None:
    body = api.get("/api/result-policies", "operator").json()
    assert body["result_policies"] == [
        {
            "id": "rp:*:production",
            "database": "*",
            "environment": "production",
            "retention_days": 7,
            "delivery_mode": "stream",
            "access": ["role:dba"],
            "source": "config",
        }
    ]
    assert body["default"]["retention_days"] == 30
    assert body["default"]["delivery_mode"] == "both"


def test_a_result_policy_by_id_the_default_included(api: Api) -> None:
    configured = api.get("/api/result-policies/rp:*:production", "operator")
    assert configured.status_code == 200, configured.text
    assert (configured.json()["retention_days"], configured.json()["source"]) == (7, "config")
    default = api.get("/api/result-policies/rp:*:*", "operator").json()
    assert (default["retention_days"], default["source"]) == (30, "default")
    missing = api.get("/api/result-policies/rp:app:nowhere", "operator")
    assert missing.status_code == 404
    assert missing.json()["code"] == "result_policy.not_found"


def test_sql_review_policies_with_their_effective_rules_and_the_builtin(api: Api) -> None:
    policies = api.get("/api/sql-review-policies", "requester").json()["sql_review_policies"]
    assert [(p["id"], p["source"]) for p in policies] == [
        ("sr:app:production", "config"),
        ("sr:*:*", "config"),
        ("builtin-default", "builtin"),
    ]
    exact, broad, builtin = policies
    assert (exact["database"], exact["environment"]) == ("app", "production")
    assert exact["rules"]["truncate"] == "warn"
    assert exact["rules"]["create_sequence"] == "block"
    assert exact["rules"]["drop_table"] == "block"  # not set: the default
    assert len(exact["rules"]) == 14
    assert broad["rules"]["no_where_update"] == "warn"
    assert builtin["rules"] == {
        "no_where_delete": "block",
        "no_where_update": "block",
        "drop_table": "block",
        "truncate": "block",
        "drop_column": "warn",
        "not_null_without_default": "warn",
        "create_index_not_concurrently": "warn",
        "alter_column_type": "warn",
        "mixed_ddl_dml": "warn",
        "large_in_list": "warn",
        "drop_index": "warn",
        "drop_view": "warn",
        "drop_sequence": "warn",
        "create_sequence": "off",
    }


def test_roles_built_in_and_custom(api: Api) -> None:
    roles = {role["name"]: role for role in api.get("/api/roles", "requester").json()["roles"]}
    assert {"admin", "requester", "approver", "operator", "agent-default", "dba"} <= set(roles)
    assert roles["requester"]["built_in"] is True
    assert roles["dba"] == {
        "name": "dba",
        "permissions": ["request.view:any", "workflow.read"],
        "databases": ["*"],
        "environments": ["production"],
        "built_in": False,
    }


def test_groups_with_their_members(api: Api) -> None:
    added = api.client.patch(
        "/api/users/approver-1",
        json={"add_groups": ["oncall"]},
        headers={"Authorization": f"Bearer {api.tokens['admin']}"},
    )
    assert added.status_code == 200, added.text
    groups = api.get("/api/groups", "admin").json()["groups"]
    assert groups == [
        {"name": "empty", "roles": ["requester"], "members": []},
        {"name": "oncall", "roles": ["approver"], "members": ["approver-1"]},
    ]
    assert api.get("/api/groups/oncall", "admin").json() == groups[1]
    missing = api.get("/api/groups/nope", "admin")
    assert missing.status_code == 404 and missing.json()["code"] == "group.not_found"


def test_databases_with_the_agents_that_serve_them(api: Api) -> None:
    now = api.clock.now()

    def agent(agent_id: str, *scopes: Scope, seen_secs_ago: float) -> None:
        record = AgentRecord(
            id=agent_id,
            scopes=scopes,
            status=AgentState.ACTIVE,
            max_concurrent=4,
            in_flight=0,
            uptime_secs=10,
            active_jobs=(),
            last_seen_at=now - timedelta(seconds=seen_secs_ago),
        )
        with api.store.write() as session:
            session.work.upsert_agent(AgentUpsert(record=record), now)

    agent("a-1", Scope("app", "production"), Scope("billing", "production"), seen_secs_ago=2)
    agent("a-2", Scope("app", "production"), seen_secs_ago=600)

    body = api.get("/api/databases", "requester").json()
    by_scope = {(d["database"], d["environment"]): d["agents"] for d in body["databases"]}
    assert list(by_scope) == [("app", "staging"), ("app", "production"), ("billing", "production")]
    assert by_scope[("app", "staging")] == []
    assert [(a["id"], a["status"]) for a in by_scope[("app", "production")]] == [
        ("a-1", "healthy"),
        ("a-2", "offline"),
    ]
    assert [a["id"] for a in by_scope[("billing", "production")]] == ["a-1"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/workflows",
        "/api/execution-policies/x",
        "/api/sql-review-policies",
        "/api/sql-review-policies/builtin-default",
        "/api/roles",
        "/api/groups/oncall",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_configuration_is_not_written_through_the_api(api: Api, path: str, method: str) -> None:
    response = api.send(method, path, "admin")
    assert response.status_code == 405
    assert response.json() == {
        "error": "this resource is config-managed; update server.toml and restart",
        "code": "config_only",
        "hint": None,
    }


def test_unknown_query_input_is_never_a_500(api: Api) -> None:
    for path in ("/api/groups/%00", "/api/groups/" + "x" * 5000, "/api/databases?x=%ff"):
        assert api.get(path, "admin").status_code < 500
