"""The identity API end to end: the real FastAPI app, the real store, in-process HTTP.

`create_app` with the identity router only, `authenticate` = the identity use case, the
SQLAlchemy store migrated on SQLite (a file in tmp_path) and on PostgreSQL, driven with
FastAPI's TestClient (httpx over ASGI). Time is a fake clock, so expiry needs no sleep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select, text, update

from adapters.crypto.ed25519_signer import Ed25519Signer
from adapters.files.secrets import LocalSecretFiles, file_mode
from adapters.http_api.app import create_app
from adapters.http_api.auth import current_agent
from adapters.http_api.routes_identity import build_identity_router
from adapters.store.engine import create_store_engine
from adapters.store.identity_repo import SqlIdentityRepository
from adapters.store.migrations import migrate
from adapters.store.schema import audit_events, audit_purge_checkpoints, server_secrets, tokens
from adapters.store.sql_store import SqlStore
from application.server.audit_maintenance import AuditMaintenance
from application.server.identity.audit_integrity import AuditIntegrity
from application.server.identity.audit_queries import AuditQueries
from application.server.identity.authentication import Authenticator
from application.server.identity.bootstrap import BootstrapAction, BootstrapError, Bootstrapper
from application.server.identity.roles import RoleDirectory
from application.server.identity.tokens import TokenRequest, TokenService
from application.server.identity.users import UserService
from application.server.ports.identity import TokenFilters, UserRecord, UserStatus
from application.server.readiness import StoreReadiness
from application.server.settings import RetentionSettings, ServerSettings
from domain.server.api_tokens import SubjectType
from domain.server.audit import AuditEvent, chain
from domain.server.audit_integrity import Anchor
from domain.server.rbac import Principal
from tests.fakes.clock import FakeClock
from tests.server_keys import kek_cipher, signer_from_store

pytestmark = pytest.mark.integration

VERSION = "9.8.7-test"
AUDIT_FIELDS = tuple(field.name for field in dataclasses.fields(AuditEvent))
AGENT_REFUSAL = {"error": "agent tokens cannot access this endpoint", "code": "forbidden"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dbward.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    made = create_store_engine(store_url)
    migrate(made)
    yield made
    made.dispose()


@dataclass
class Server:
    engine: Engine
    state_dir: Path
    clock: FakeClock
    authenticator: Authenticator
    tokens: TokenService
    bootstrapper: Bootstrapper
    client: TestClient
    draining: list[bool] = field(default_factory=lambda: [False])
    #: The matrix's callers: subject id -> raw token (None: anonymous).
    tokens_of: dict[str, str | None] = field(default_factory=dict)

    def token(self, name: str) -> str:
        return (self.state_dir / name).read_text()

    def as_(self, raw: str | None) -> dict[str, str]:
        return {} if raw is None else {"Authorization": f"Bearer {raw}"}

    def call(self, method: str, path: str, raw: str | None, body: Any = None) -> Any:
        kwargs: dict[str, Any] = {"headers": self.as_(raw)}
        if body is not None:
            kwargs["json"] = body
        return self.client.request(method, path, **kwargs)


def _agent_router() -> APIRouter:
    """A stand-in agent endpoint: proves an agent token authenticates as an agent."""
    router = APIRouter()

    @router.get("/api/agent/whoami")
    def whoami(agent: Principal = Depends(current_agent)) -> dict[str, Any]:  # noqa: B008
        return {"subject_id": agent.subject_id, "roles": sorted(agent.role_names)}

    return router


def build_server(engine: Engine, state_dir: Path, clock: FakeClock | None = None) -> Server:
    clock = clock or FakeClock()
    store = SqlStore(engine)
    settings = ServerSettings.for_state_dir(state_dir)

    def new_id() -> str:
        return str(uuid.uuid4())

    roles = RoleDirectory(settings.auth)
    authenticator = Authenticator(store, clock, new_id, roles)
    tokens = TokenService(store, clock, new_id, secrets.token_bytes, settings, roles)
    bootstrapper = Bootstrapper(
        store, clock, new_id, secrets.token_bytes, LocalSecretFiles(), kek_cipher()
    )
    draining = [False]
    app = create_app(
        routers=[
            build_identity_router(
                tokens=tokens,
                users=UserService(store, clock, new_id, secrets.token_bytes, roles),
                audit=AuditQueries(store),
                audit_integrity=AuditIntegrity(store=store, signer=signer_from_store(store)),
                readiness=StoreReadiness(store),
                min_agent_version=settings.min_agent_version,
                version=VERSION,
                is_draining=lambda: draining[0],
            ),
            _agent_router(),
        ],
        authenticate=authenticator.authenticate,
        version=VERSION,
    )
    return Server(
        engine, state_dir, clock, authenticator, tokens, bootstrapper, TestClient(app), draining
    )


@pytest.fixture
def server(engine: Engine, tmp_path: Path) -> Iterator[Server]:
    state_dir = tmp_path / "state"
    built = build_server(engine, state_dir)
    assert built.bootstrapper.bootstrap(state_dir).action is BootstrapAction.CREATED
    with built.client:
        yield built


def make_user(server: Server, user_id: str, *roles: str) -> str:
    response = server.call(
        "POST", "/api/users", server.token("admin-token"), {"id": user_id, "roles": list(roles)}
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def make_agent(server: Server, agent_id: str) -> str:
    body = {
        "subject_id": agent_id,
        "subject_type": "agent",
        "scope_ceiling": {"roles": ["agent-default"]},
    }
    response = server.call("POST", "/api/tokens", server.token("admin-token"), body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


# --- the authorization matrix -----------------------------------------------------------------

ROLES = ("admin", "requester", "approver", "operator", "agent", "anonymous")


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    #: (server, caller id) -> (path, body); may create what the call needs.
    target: Callable[[Server, str], tuple[str, Any]]
    allowed: frozenset[str]
    ok: int = 200


def _own_token(server: Server, caller: str) -> str:
    """A fresh token of the caller (for an agent caller: any agent token)."""
    if caller not in server.tokens_of or server.tokens_of[caller] is None:
        return _other_token(server, caller)
    principal = server.authenticator.authenticate(f"Bearer {server.tokens_of[caller]}")
    if principal.is_agent:
        return make_agent_token_id(server, caller)
    issued = server.tokens.create(principal, TokenRequest(caller, SubjectType.USER))
    return issued.record.id


def make_agent_token_id(server: Server, agent_id: str) -> str:
    raw = make_agent(server, agent_id)
    with SqlStore(server.engine).read() as session:
        found = session.identity.find_by_prefix(raw[4:12])
    return found[0].id


def _fresh_user(server: Server, *roles: str) -> str:
    user_id = f"target-{uuid.uuid4().hex[:8]}"
    make_user(server, user_id, *(roles or ("requester",)))
    return user_id


def _other_token(server: Server, _caller: str) -> str:
    target = _fresh_user(server)
    with SqlStore(server.engine).read() as session:
        found = session.identity.list_tokens(TokenFilters(subject_id=target))
    return found[0].id


USERS = frozenset({"admin", "requester", "approver", "operator"})
ADMIN_ONLY = frozenset({"admin"})
AUDITORS = frozenset({"admin", "operator"})
EVERYONE = frozenset(ROLES)


def _suspended_user(server: Server, _caller: str) -> tuple[str, Any]:
    target = _fresh_user(server)
    response = server.call("POST", f"/api/users/{target}/suspend", server.token("admin-token"))
    assert response.status_code == 200
    return f"/api/users/{target}/activate", None


CASES = (
    Case("health", "GET", lambda s, c: ("/health", None), EVERYONE),
    Case("ready", "GET", lambda s, c: ("/ready", None), EVERYONE),
    Case("me", "GET", lambda s, c: ("/api/me", None), USERS),
    Case(
        "create own token",
        "POST",
        lambda s, c: ("/api/tokens", {"subject_id": c, "subject_type": "user"}),
        USERS,
        201,
    ),
    Case("list tokens", "GET", lambda s, c: ("/api/tokens", None), ADMIN_ONLY),
    Case(
        "revoke own token",
        "DELETE",
        lambda s, c: (f"/api/tokens/{_own_token(s, c)}", None),
        USERS,
    ),
    Case(
        "revoke another's token",
        "DELETE",
        lambda s, c: (f"/api/tokens/{_other_token(s, c)}", None),
        ADMIN_ONLY,
    ),
    Case(
        "inspect own token",
        "GET",
        lambda s, c: (f"/api/tokens/{_own_token(s, c)}/inspect", None),
        USERS,
    ),
    Case(
        "inspect another's token",
        "GET",
        lambda s, c: (f"/api/tokens/{_other_token(s, c)}/inspect", None),
        ADMIN_ONLY,
    ),
    Case(
        "create user",
        "POST",
        lambda s, c: ("/api/users", {"id": f"new-{uuid.uuid4().hex[:8]}", "roles": ["requester"]}),
        ADMIN_ONLY,
        201,
    ),
    Case("list users", "GET", lambda s, c: ("/api/users", None), ADMIN_ONLY),
    Case("get yourself", "GET", lambda s, c: (f"/api/users/{c}", None), USERS),
    Case(
        "get another user",
        "GET",
        lambda s, c: (f"/api/users/{_fresh_user(s)}", None),
        ADMIN_ONLY,
    ),
    Case(
        "update a user",
        "PATCH",
        lambda s, c: (f"/api/users/{_fresh_user(s)}", {"add_roles": ["approver"]}),
        ADMIN_ONLY,
    ),
    Case(
        "delete a user",
        "DELETE",
        lambda s, c: (f"/api/users/{_fresh_user(s)}", None),
        ADMIN_ONLY,
    ),
    Case(
        "suspend a user",
        "POST",
        lambda s, c: (f"/api/users/{_fresh_user(s)}/suspend", None),
        ADMIN_ONLY,
    ),
    Case("activate a user", "POST", _suspended_user, ADMIN_ONLY),
    Case(
        "reissue an initial token",
        "POST",
        lambda s, c: (f"/api/users/{_fresh_user(s)}/reissue-initial-token", None),
        ADMIN_ONLY,
    ),
    Case("audit events", "GET", lambda s, c: ("/api/audit/events", None), AUDITORS),
    Case("audit verify", "GET", lambda s, c: ("/api/audit/verify", None), AUDITORS),
    Case("audit head", "GET", lambda s, c: ("/api/audit/head", None), AUDITORS),
    Case(
        "audit verify against an anchor",
        "GET",
        lambda s, c: (f"/api/audit/verify?anchor={_anchor(s)}", None),
        AUDITORS,
    ),
)


def _anchor(server: Server) -> str:
    head = server.call("GET", "/api/audit/head", server.token("admin-token"))
    assert head.status_code == 200, head.text
    anchor: str = head.json()["anchor"]
    return anchor


def test_authorization_matrix(server: Server) -> None:
    callers: dict[str, tuple[str, str | None]] = {
        "admin": ("root", make_user(server, "root", "admin")),
        "requester": ("req", make_user(server, "req", "requester")),
        "approver": ("appr", make_user(server, "appr", "approver")),
        "operator": ("op", make_user(server, "op", "operator")),
        "agent": ("prod-agent-9", make_agent(server, "prod-agent-9")),
        "anonymous": ("nobody", None),
    }
    server.tokens_of = dict(callers.values())
    mismatches: list[str] = []
    for case in CASES:
        for role, (subject, raw) in callers.items():
            path, body = case.target(server, subject)
            response = server.call(case.method, path, raw, body)
            if role in case.allowed:
                expected = case.ok
            elif role == "anonymous":
                expected = 401
            else:
                expected = 403
            if response.status_code != expected:
                mismatches.append(
                    f"{case.name} as {role}: {response.status_code} != {expected} {response.text}"
                )
            assert response.headers["x-dbward-version"] == VERSION
            assert response.headers["content-type"].startswith("application/json")
            if role == "agent" and expected == 403:
                assert response.json() == {**AGENT_REFUSAL, "hint": None}, case.name
    assert not mismatches, "\n".join(mismatches)


# --- tokens ----------------------------------------------------------------------------------


def test_token_lifecycle(server: Server) -> None:
    admin = server.token("admin-token")
    created = server.call("POST", "/api/tokens", admin, {"subject_id": "admin", "name": "laptop"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["token"].startswith("dbw_") and len(body["token"]) == 36
    assert body["prefix"] == body["token"][4:12]
    assert body["scope_ceiling"] == {"roles": ["admin", "requester"]}
    assert body["effective_roles"] == ["admin", "requester"]
    assert "token.create_agent" in body["effective_permissions"]

    me = server.call("GET", "/api/me", body["token"]).json()
    assert me["subject_id"] == "admin" and me["subject_type"] == "user"
    assert [r["name"] for r in me["roles"]] == ["admin", "requester"]
    assert me["roles"][0]["databases"] == ["*"]

    listed = server.call("GET", "/api/tokens", admin).json()["tokens"]
    assert [t["id"] for t in listed] == [body["id"]]  # bootstrap tokens hidden
    assert listed[0]["token_prefix"] == body["prefix"] and "token" not in listed[0]
    assert listed[0]["status"] == "active"

    inspected = server.call("GET", f"/api/tokens/{body['id']}/inspect", body["token"]).json()
    assert inspected["resolved_roles"] == ["admin", "requester"]
    assert inspected["status"] == "active"

    revoked = server.call("DELETE", f"/api/tokens/{body['id']}", admin)
    assert revoked.status_code == 200
    assert revoked.json()["id"] == body["id"] and revoked.json()["revoked_at"]
    after = server.call("GET", "/api/me", body["token"])
    assert after.status_code == 401
    assert after.json()["code"] == "token_revoked"
    again = server.call("DELETE", f"/api/tokens/{body['id']}", admin)
    assert again.status_code == 409

    revoked_list = server.call("GET", "/api/tokens?status=revoked&subject=admin", admin).json()
    assert [t["id"] for t in revoked_list["tokens"]] == [body["id"]]
    assert server.call("GET", "/api/tokens?status=bogus", admin).status_code == 400


def test_expiry(server: Server) -> None:
    admin = server.token("admin-token")
    expires = (server.clock.now() + timedelta(hours=1)).isoformat()
    created = server.call(
        "POST", "/api/tokens", admin, {"subject_id": "admin", "expires_at": expires}
    )
    assert created.status_code == 201, created.text
    raw = created.json()["token"]
    assert server.call("GET", "/api/me", raw).status_code == 200
    server.clock.advance(3600)
    expired = server.call("GET", "/api/me", raw)
    assert (expired.status_code, expired.json()["code"]) == (401, "token_expired")
    past = server.call("POST", "/api/tokens", admin, {"subject_id": "admin", "expires_at": expires})
    assert past.status_code == 400
    naive = server.call(
        "POST", "/api/tokens", admin, {"subject_id": "admin", "expires_at": "2099-01-01T00:00:00"}
    )
    assert naive.status_code == 400


def test_the_briefs_agent_token_command(server: Server) -> None:
    """`dbward token create --subject prod-agent-1 --subject-type agent --role agent-default`."""
    body = {
        "subject_id": "prod-agent-1",
        "subject_type": "agent",
        "scope_ceiling": {"roles": ["agent-default"]},
    }
    created = server.call("POST", "/api/tokens", server.token("admin-token"), body)
    assert created.status_code == 201, created.text
    raw = created.json()["token"]
    assert created.json()["effective_roles"] == ["agent-default"]
    assert created.json()["effective_permissions"] == ["agent.operate"]
    whoami = server.call("GET", "/api/agent/whoami", raw)
    assert whoami.json() == {"subject_id": "prod-agent-1", "roles": ["agent-default"]}
    refused = server.call("GET", "/api/me", raw)
    assert refused.status_code == 403
    assert refused.json() == {**AGENT_REFUSAL, "hint": None}
    # and a user token is no agent
    user_on_agent_path = server.call("GET", "/api/agent/whoami", server.token("admin-token"))
    assert user_on_agent_path.status_code == 403


def test_bootstrap_agent_token_reaches_agent_paths(server: Server) -> None:
    whoami = server.call("GET", "/api/agent/whoami", server.token("agent-token"))
    assert whoami.json() == {"subject_id": "agent", "roles": ["agent-default"]}
    requester = server.call("GET", "/api/me", server.token("requester-token")).json()
    assert [r["name"] for r in requester["roles"]] == ["requester"]


def test_tokens_are_stored_hashed(server: Server, store_url: str) -> None:
    raw = make_user(server, "alice", "requester")
    with server.engine.connect() as conn:
        rows = conn.execute(select(tokens)).mappings().all()
        events = conn.execute(select(audit_events)).mappings().all()
    assert any(row["token_hash"] == hashlib.sha256(raw.encode()).hexdigest() for row in rows)
    for row in [*rows, *events]:
        assert all(raw not in str(value) for value in row.values())
    for name in ("admin-token", "agent-token", "requester-token"):
        secret = server.token(name)
        assert all(secret not in str(value) for row in rows for value in row.values())
    if store_url.startswith("sqlite"):
        database = Path(store_url.removeprefix("sqlite:///"))
        blob = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
        assert raw.encode() not in blob


# --- users -----------------------------------------------------------------------------------


def test_user_management(server: Server) -> None:
    admin = server.token("admin-token")
    created = server.call("POST", "/api/users", admin, {"id": "alice", "roles": ["requester"]})
    assert created.status_code == 201
    assert set(created.json()) >= {"id", "token", "token_prefix", "roles", "groups"}
    alice = created.json()["token"]
    assert server.call("GET", "/api/users/alice", alice).json()["roles"] == ["requester"]
    patched = server.call("PATCH", "/api/users/alice", admin, {"add_roles": ["approver"]})
    assert patched.json()["roles"] == ["requester", "approver"]
    duplicate = server.call("POST", "/api/users", admin, {"id": "alice", "roles": ["requester"]})
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "user_exists")
    suspended = server.call("POST", "/api/users/alice/suspend", admin)
    assert suspended.json()["revoked_tokens"] == 1
    assert server.call("GET", "/api/me", alice).status_code == 401
    assert server.call("POST", "/api/users/alice/activate", admin).json()["status"] == "active"
    reissued = server.call("POST", "/api/users/alice/reissue-initial-token", admin).json()
    assert server.call("GET", "/api/me", reissued["token"]).status_code == 200
    deleted = server.call("DELETE", "/api/users/alice", admin)
    assert deleted.status_code == 200 and deleted.json()["status"] == "deleted"
    assert server.call("GET", "/api/me", reissued["token"]).status_code == 401
    assert server.call("GET", "/api/users/alice", admin).status_code == 410
    ids = [u["id"] for u in server.call("GET", "/api/users", admin).json()["users"]]
    assert ids == ["admin", "agent"]
    last_admin = server.call("POST", "/api/users/admin/suspend", admin)
    assert (last_admin.status_code, last_admin.json()["code"]) == (400, "last_admin")
    assert server.call("GET", "/api/users/nobody", admin).status_code == 404


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content", "status"),
    [
        ("/api/tokens", b"{not json", 400),
        ("/api/tokens", b"[1, 2]", 400),
        ("/api/tokens", b"null", 400),
        ("/api/tokens", b"{}", 400),
        ("/api/tokens", b'{"subject_id": "admin", "role": "admin"}', 400),
        ("/api/tokens", b'{"subject_id": 5}', 400),
        ("/api/tokens", b'{"subject_id": "admin", "subject_type": "robot"}', 400),
        ("/api/tokens", b'{"subject_id": "admin", "scope_ceiling": ["admin"]}', 400),
        ("/api/tokens", b'{"subject_id": "admin", "scope_ceiling": {"roles": []}}', 400),
        ("/api/tokens", b'{"subject_id": "admin", "expires_at": "tomorrow"}', 400),
        ("/api/users", b'{"id": "x", "roles": "admin"}', 400),
        ("/api/users", b'{"id": "x", "roles": ["requester"], "admin": true}', 400),
        ("/api/users", b'{"id": "../etc", "roles": ["requester"]}', 400),
        ("/api/tokens", b"{" + b'"a": "' + b"x" * (2 * 1024 * 1024) + b'"}', 413),
    ],
)
def test_malformed_bodies_are_4xx_json(
    server: Server, path: str, content: bytes, status: int
) -> None:
    response = server.client.post(
        path,
        content=content,
        headers={**server.as_(server.token("admin-token")), "content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "hint"}
    assert response.headers["x-dbward-version"] == VERSION


def test_patch_shapes(server: Server) -> None:
    admin = server.token("admin-token")
    make_user(server, "bob", "requester")
    for bad in (
        {},
        {"roles": "x"},
        {"roles": ["requester"], "add_roles": ["approver"]},
        {"slack": 1},
    ):
        response = server.call("PATCH", "/api/users/bob", admin, bad)
        assert response.status_code == 400, (bad, response.text)


def test_unknown_routes_and_methods_carry_the_envelope(server: Server) -> None:
    missing = server.call("GET", "/api/nothing-here", None)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = server.call("PUT", "/api/tokens", server.token("admin-token"))
    assert wrong.status_code == 405
    assert missing.headers["x-dbward-version"] == wrong.headers["x-dbward-version"] == VERSION


# --- health and readiness ----------------------------------------------------------------------


def test_health_and_ready(server: Server) -> None:
    health = server.call("GET", "/health", None)
    assert health.json() == {"status": "ok", "version": VERSION, "min_agent_version": "0.2.0"}
    ready = server.call("GET", "/ready", None)
    assert ready.json() == {"status": "ok", "checks": {"store": "ok"}}
    server.draining[0] = True
    draining = server.call("GET", "/ready", None)
    assert draining.status_code == 503 and draining.json()["status"] == "draining"
    assert draining.headers["x-dbward-version"] == VERSION


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_files_are_private_and_idempotent(server: Server) -> None:
    names = ("admin-token", "agent-token", "requester-token")
    for name in names:
        assert file_mode(server.state_dir / name) == 0o600
    assert not [p for p in server.state_dir.iterdir() if p.name.endswith(".tmp")]
    before = {name: server.token(name) for name in names}
    again = build_server(server.engine, server.state_dir)
    assert again.bootstrapper.bootstrap(server.state_dir).action is BootstrapAction.EXISTING
    assert {name: server.token(name) for name in names} == before
    assert server.call("GET", "/api/me", before["admin-token"]).status_code == 200


def test_bootstrap_files_never_world_readable_even_with_a_loose_umask(
    engine: Engine, tmp_path: Path
) -> None:
    old = os.umask(0)
    try:
        built = build_server(engine, tmp_path / "loose")
        built.bootstrapper.bootstrap(tmp_path / "loose")
    finally:
        os.umask(old)
    for path in (tmp_path / "loose").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_missing_files_come_back_from_the_store_and_force_rotates(server: Server) -> None:
    old_admin = server.token("admin-token")
    old_agent = server.token("agent-token")
    (server.state_dir / "agent-token").unlink()
    restarted = build_server(server.engine, server.state_dir)
    written = restarted.bootstrapper.bootstrap(server.state_dir)
    assert written.action is BootstrapAction.EXISTING
    assert written.files == (server.state_dir / "agent-token",)
    assert server.token("agent-token") == old_agent
    assert file_mode(server.state_dir / "agent-token") == 0o600
    with server.engine.begin() as conn:  # tokens of a server before schema version 3
        conn.execute(delete(server_secrets))
    (server.state_dir / "agent-token").unlink()
    with pytest.raises(BootstrapError, match="--force-bootstrap"):
        restarted.bootstrapper.bootstrap(server.state_dir)
    outcome = restarted.bootstrapper.bootstrap(server.state_dir, force=True)
    assert outcome.action is BootstrapAction.ROTATED
    assert len(outcome.revoked_tokens) == 3
    refused = server.call("GET", "/api/me", old_admin)
    assert (refused.status_code, refused.json()["code"]) == (401, "token_revoked")
    assert server.call("GET", "/api/me", server.token("admin-token")).status_code == 200
    for name in ("admin-token", "agent-token", "requester-token"):
        assert file_mode(server.state_dir / name) == 0o600
    assert restarted.bootstrapper.bootstrap(server.state_dir).action is BootstrapAction.EXISTING


# --- audit -----------------------------------------------------------------------------------


def test_audit_events_and_verify(server: Server) -> None:
    admin = server.token("admin-token")
    make_user(server, "alice", "requester")
    server.call("GET", "/api/me", "dbw_0000000000000000000000000000dead")
    events = server.call("GET", "/api/audit/events?limit=500", admin).json()["events"]
    types = [e["event_type"] for e in events]
    assert types[0] == "auth.failure"  # newest first
    assert {"user.created", "token.created"} <= set(types)
    failure = events[0]
    assert (failure["actor_id"], failure["outcome"]) == ("anonymous", "denied")
    assert failure["metadata"]["code"] == "unauthorized"
    only = server.call("GET", "/api/audit/events?event_type=user.created&limit=1", admin).json()
    assert [e["resource_id"] for e in only["events"]] == ["alice"]
    since = (server.clock.now() + timedelta(seconds=1)).isoformat()
    assert server.call("GET", "/api/audit/events", admin, None).status_code == 200
    later = server.client.get(
        "/api/audit/events", params={"since": since}, headers=server.as_(admin)
    )
    assert later.json()["events"] == []
    bad = server.client.get(
        "/api/audit/events", params={"since": "yesterday"}, headers=server.as_(admin)
    )
    assert bad.status_code == 400
    assert server.call("GET", "/api/audit/events?limit=0", admin).status_code == 400

    verdict = server.call("GET", "/api/audit/verify", admin).json()
    assert verdict == {
        "total_events": verdict["total_events"],
        "first_broken_id": None,
        "valid": True,
        "reason": None,
    }
    assert verdict["total_events"] >= len(events)

    victim = next(e for e in events if e["event_type"] == "user.created")
    with server.engine.begin() as conn:
        conn.execute(
            update(audit_events).where(audit_events.c.id == victim["id"]).values(actor_id="mallory")
        )
    tampered = server.call("GET", "/api/audit/verify", admin).json()
    assert tampered["valid"] is False
    assert tampered["first_broken_id"] == victim["id"]
    assert tampered["reason"] == "hash_mismatch"


def _rewrite_newest(engine: Engine, count: int, **changes: str) -> list[str]:
    """Rewrite the newest `count` events in the store and recompute their hashes, the way
    someone with write access to the store would; returns the rewritten ids."""
    with engine.begin() as conn:
        rows = (
            conn.execute(select(audit_events).order_by(audit_events.c.seq.desc()).limit(count + 1))
            .mappings()
            .all()
        )
        oldest_first = list(reversed(rows))
        previous = oldest_first[0]["event_hash"]
        rewritten: list[str] = []
        for row in oldest_first[1:]:
            fields = {name: row[name] for name in AUDIT_FIELDS}
            forged = chain(AuditEvent(**{**fields, **changes}), previous)
            conn.execute(
                update(audit_events)
                .where(audit_events.c.seq == row["seq"])
                .values(**{name: getattr(forged, name) for name in AUDIT_FIELDS})
            )
            previous = forged.event_hash
            rewritten.append(row["id"])
    return rewritten


def test_audit_head_is_signed_with_the_servers_key(server: Server) -> None:
    admin = server.token("admin-token")
    head = server.call("GET", "/api/audit/head", admin).json()
    newest = server.call("GET", "/api/audit/events?limit=1", admin).json()["events"][0]
    assert (head["event_id"], head["event_hash"]) == (newest["id"], newest["event_hash"])
    public_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(head["public_key"]))
    message = f"dbward-audit-anchor:v1|{head['position']}|{head['event_id']}|{head['event_hash']}"
    assert head["signed_message"] == message
    public_key.verify(bytes.fromhex(head["signature"]), message.encode())  # raises if not
    assert head["public_key"] == signer_from_store(SqlStore(server.engine)).public_key_hex()
    assert head["key_id"].startswith("ed25519:")
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", head["anchor"])  # URL-safe as it is


def test_rewritten_newest_events_are_caught_by_an_earlier_anchor(server: Server) -> None:
    admin = server.token("admin-token")
    make_user(server, "alice", "requester")
    earlier = server.call("GET", "/api/audit/head", admin).json()
    make_user(server, "bob", "requester")
    _rewrite_newest(server.engine, 4, actor_id="mallory")  # two before the anchor, two after

    plain = server.call("GET", "/api/audit/verify", admin).json()
    assert plain["valid"] is True  # the hash chain alone cannot tell
    anchored = server.client.get(
        "/api/audit/verify", params={"anchor": earlier["anchor"]}, headers=server.as_(admin)
    )
    assert anchored.status_code == 200
    assert anchored.json() == {
        "total_events": plain["total_events"],
        "first_broken_id": earlier["event_id"],
        "valid": False,
        "reason": "anchor_mismatch",
        "anchor_verified": False,
    }


def test_a_deleted_tail_is_caught_by_an_anchor(server: Server) -> None:
    admin = server.token("admin-token")
    make_user(server, "alice", "requester")
    anchor = server.call("GET", "/api/audit/head", admin).json()
    with server.engine.begin() as conn:
        newest = conn.scalar(select(func.max(audit_events.c.seq)))
        conn.execute(delete(audit_events).where(audit_events.c.seq == newest))
    verdict = server.client.get(
        "/api/audit/verify", params={"anchor": anchor["anchor"]}, headers=server.as_(admin)
    ).json()
    assert (verdict["valid"], verdict["first_broken_id"], verdict["reason"]) == (
        False,
        anchor["event_id"],
        "anchor_missing",
    )


def test_an_untouched_chain_holds_its_anchor(server: Server) -> None:
    admin = server.token("admin-token")
    anchor = server.call("GET", "/api/audit/head", admin).json()["anchor"]
    make_user(server, "alice", "requester")
    verdict = server.client.get(
        "/api/audit/verify", params={"anchor": anchor}, headers=server.as_(admin)
    ).json()
    assert verdict["valid"] is True and verdict["anchor_verified"] is True


@pytest.mark.parametrize(
    "anchor",
    ["", "nonsense", "a1.", "a1.%%%", "a1." + "QUFB" * 400, "a1.MXxhfGJ8Y3xk"],
)
def test_a_bad_anchor_is_a_400(server: Server, anchor: str) -> None:
    response = server.client.get(
        "/api/audit/verify",
        params={"anchor": anchor},
        headers=server.as_(server.token("admin-token")),
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation.failed"


def test_an_anchor_signed_by_another_key_is_a_400(server: Server) -> None:
    admin = server.token("admin-token")
    head = server.call("GET", "/api/audit/head", admin).json()
    other = Ed25519Signer(bytes(32))
    forged = Anchor(
        head["event_id"],
        head["event_hash"],
        head["position"],
        head["key_id"],  # claims the server's key, signed with another
        other.sign(head["signed_message"].encode()),
    )
    response = server.client.get(
        "/api/audit/verify", params={"anchor": forged.encode()}, headers=server.as_(admin)
    )
    assert response.status_code == 400
    assert "signature" in response.json()["hint"]


def test_a_purge_leaves_audit_verify_green(server: Server, store_url: str) -> None:
    admin = server.token("admin-token")
    settings = ServerSettings.for_state_dir(
        server.state_dir, retention=RetentionSettings(audit_ttl_days=7)
    )
    maintenance = AuditMaintenance(
        store=SqlStore(server.engine),
        settings=settings,
        signer=signer_from_store(SqlStore(server.engine)),
    )
    make_user(server, "alice", "requester")
    assert maintenance.write_checkpoint(server.clock.now()) == 1
    old = server.call("GET", "/api/audit/head", admin).json()
    server.clock.advance(8 * 86400)
    make_user(server, "bob", "requester")
    assert maintenance.write_checkpoint(server.clock.now(), force=True) == 1
    recent = server.call("GET", "/api/audit/head", admin).json()
    before = server.call("GET", "/api/audit/verify", admin).json()["total_events"]

    purged = maintenance.purge_expired(server.clock.now())

    assert purged == old["position"]
    verdict = server.call("GET", "/api/audit/verify", admin).json()
    assert verdict == {
        "total_events": before - purged + 1,  # + the audit.purge_checkpoint event
        "first_broken_id": None,
        "valid": True,
        "reason": None,
    }
    types = [
        e["event_type"] for e in server.call("GET", "/api/audit/events", admin).json()["events"]
    ]
    assert types[0] == "audit.purge_checkpoint" and "user.created" in types
    kept = server.client.get(
        "/api/audit/verify", params={"anchor": recent["anchor"]}, headers=server.as_(admin)
    )
    assert kept.json()["anchor_verified"] is True
    gone = server.client.get(
        "/api/audit/verify", params={"anchor": old["anchor"]}, headers=server.as_(admin)
    )
    assert gone.status_code == 410
    head = server.call("GET", "/api/audit/head", admin).json()
    assert head["position"] == recent["position"] + 1  # positions survive the purge
    with server.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(audit_purge_checkpoints)) == 1

    # deleting more of the prefix by hand is not a purge
    with server.engine.begin() as conn:
        first = conn.scalar(select(func.min(audit_events.c.seq)))
        conn.execute(delete(audit_events).where(audit_events.c.seq == first))
    broken = server.call("GET", "/api/audit/verify", admin).json()
    assert broken["reason"] == "purge_boundary_unauthenticated"


def test_an_audit_store_failure_keeps_the_401(server: Server) -> None:
    with server.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit is read-only'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION no_audit() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'audit is read-only'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION no_audit()"
                )
            )
    refused = server.call("GET", "/api/me", "dbw_0000000000000000000000000000beef")
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized"


# --- the repository's races ------------------------------------------------------------------


def test_repository_conditional_updates(engine: Engine, tmp_path: Path) -> None:
    clock = FakeClock()
    now = clock.now()
    with engine.begin() as conn:
        repo = SqlIdentityRepository(conn)
        user = UserRecord(id="u1", roles=("requester",), created_at=now, updated_at=now)
        assert repo.add_user(user)
        assert not repo.add_user(user)  # a duplicate does not spoil the transaction
        assert repo.add_member("g", "u1", now) and not repo.add_member("g", "u1", now)
        assert not repo.set_status("u1", UserStatus.ACTIVE, expected=UserStatus.SUSPENDED, now=now)
        assert repo.set_status("u1", UserStatus.SUSPENDED, expected=UserStatus.ACTIVE, now=now)
        assert repo.soft_delete("u1", now) and not repo.soft_delete("u1", now)
        assert not repo.set_roles("u1", ("admin",), now)
        assert repo.restore_user("u1", now)
        assert repo.memberships() == {"u1": ["g"]}
        repo.serialize_identity_changes()
        repo.ping()
    with engine.connect() as conn:
        stored = SqlIdentityRepository(conn).get_user("u1")
    assert stored is not None and stored.can_authenticate and stored.roles == ("requester",)


def test_malformed_token_names_and_offsets_are_400_not_500(server: Server) -> None:
    admin = server.token("admin-token")
    lone = b'{"subject_id":"root","name":"build \\ud800 bot"}'
    response = server.client.post(
        "/api/tokens",
        content=lone,
        headers={**server.as_(admin), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation.failed"
    assert "lone surrogates" in response.json()["error"]
    huge = server.call("GET", f"/api/audit/events?offset={2**63}", admin)
    assert huge.status_code == 400, huge.text
    assert huge.json()["code"] == "validation.failed"
    assert server.call("GET", "/api/audit/events?offset=1", admin).status_code == 200
