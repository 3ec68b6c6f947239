"""Identity use cases over an in-memory store (tests/fakes/identity_store.py).

Authentication, tokens, users, the audit queries and bootstrap, each driven through
`IdentityServices` exactly as the HTTP layer calls it, with a fake clock that jumps.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.server.identity.service import (
    BootstrapAction,
    BootstrapError,
    IdentityServices,
    NewUser,
    TokenRequest,
    UserChanges,
)
from application.server.ports.identity import LifecycleState, TokenFilters, UserStatus
from application.server.ports.store import AuditFilters
from application.server.settings import (
    AuthSettings,
    CustomRoleSettings,
    GroupSettings,
    ServerSettings,
    TokenPolicySettings,
)
from domain.server.api_tokens import SubjectType, TokenStatus, token_hash
from domain.server.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    ServerDomainError,
    Unauthenticated,
    Validation,
)
from domain.server.rbac import Principal
from tests.fakes.clock import FakeClock
from tests.fakes.identity_store import FakeStore, MemorySecretFiles

STATE = Path("/state")


class Env:
    """Services over fakes, bootstrapped, with helpers to get principals."""

    def __init__(self, settings: ServerSettings | None = None, **kwargs: Any) -> None:
        self.store = FakeStore()
        self.clock = FakeClock()
        self.files = MemorySecretFiles()
        ids = itertools.count(1)
        rand = itertools.count(1)
        self.cancelled: list[str] = []
        self.settings = settings or ServerSettings.for_state_dir(STATE)
        self.services = IdentityServices(
            store=self.store,  # type: ignore[arg-type]  # no `work`: identity never uses it
            clock=self.clock,
            new_id=lambda: f"id-{next(ids):04d}",
            random_bytes=lambda n: next(rand).to_bytes(n, "big"),
            settings=self.settings,
            secret_files=self.files,
            on_user_suspended=kwargs.get("hook", self._hook),
        )
        outcome = self.services.bootstrap(STATE)
        assert outcome.action is BootstrapAction.CREATED
        self.admin = self.login(self.file("admin-token"))

    def _hook(self, user_id: str) -> list[str]:
        self.cancelled.append(user_id)
        return [f"req-of-{user_id}"]

    def file(self, name: str) -> str:
        text = self.files.read_secret(STATE / name)
        assert text is not None
        return text

    def login(self, raw: str) -> Principal:
        return self.services.authenticate(f"Bearer {raw}")

    def user(
        self, user_id: str, *roles: str, groups: tuple[str, ...] = ()
    ) -> tuple[Principal, str]:
        issued = self.services.users.create(self.admin, NewUser(user_id, roles, groups))
        return self.login(issued.token), issued.token


def refused(
    call: Callable[[], object], kind: type[ServerDomainError], code: str | None = None
) -> ServerDomainError:
    with pytest.raises(kind) as caught:
        call()
    if code is not None:
        assert caught.value.code == code, caught.value
    return caught.value


@pytest.fixture
def env() -> Env:
    return Env()


# --- authentication ------------------------------------------------------------------------


class TestAuthenticate:
    @pytest.mark.parametrize(
        "header",
        [None, "", "Bearer", "bearer dbw_0123456789abcdef0123456789abcdef", "Token x", "Basic abc"],
    )
    def test_missing_or_wrong_scheme_is_401_and_audited(self, env: Env, header: str | None) -> None:
        refused(lambda: env.services.authenticate(header), Unauthenticated, "unauthorized")
        failure = env.store.events("auth.failure")[-1]
        assert (failure.actor_id, failure.outcome, failure.event_category) == (
            "anonymous",
            "denied",
            "auth",
        )
        assert json.loads(failure.metadata_json)["code"] == "unauthorized"

    def test_jwt_is_refused_while_oidc_is_off(self, env: Env) -> None:
        refused(
            lambda: env.services.authenticate("Bearer eyJhbGciOi.x.y"),
            Unauthenticated,
            "oidc_not_configured",
        )

    @pytest.mark.parametrize(
        "raw", ["dbw_short", "xyz_0123456789abcdef", "dbw_é0123456789abcdef", "dbw_" + "a" * 300]
    )
    def test_malformed_tokens_are_401(self, env: Env, raw: str) -> None:
        refused(lambda: env.login(raw), Unauthenticated, "unauthorized")

    def test_unknown_token_with_a_known_prefix_is_401(self, env: Env) -> None:
        real = env.file("admin-token")
        forged = real[:12] + ("0" if real[12] != "0" else "1") + real[13:]
        refused(lambda: env.login(forged), Unauthenticated, "unauthorized")

    def test_bootstrap_admin_principal(self, env: Env) -> None:
        assert env.admin.subject_id == "admin"
        assert env.admin.subject_type is SubjectType.USER
        assert env.admin.role_names == {"admin", "requester"}
        assert env.admin.token_id is not None

    def test_revoked_and_expired(self, env: Env) -> None:
        issued = env.services.tokens.create(
            env.admin,
            TokenRequest(
                "admin", SubjectType.USER, expires_at=env.clock.now() + timedelta(hours=1)
            ),
        )
        assert env.login(issued.token).subject_id == "admin"
        env.clock.advance(3600)
        refused(lambda: env.login(issued.token), Unauthenticated, "token_expired")
        other = env.services.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        env.services.tokens.revoke(env.admin, other.record.id)
        refused(lambda: env.login(other.token), Unauthenticated, "token_revoked")

    def test_suspended_or_deleted_user_is_401_even_with_an_active_token(self, env: Env) -> None:
        _, raw = env.user("alice", "requester")
        user = env.store.state.users["alice"]
        env.store.state.users["alice"] = replace(user, status=UserStatus.SUSPENDED)
        refused(lambda: env.login(raw), Unauthenticated, "user_suspended")
        env.store.state.users["alice"] = replace(user, lifecycle_state=LifecycleState.DELETED)
        refused(lambda: env.login(raw), Unauthenticated, "user_deleted")

    def test_roles_are_direct_plus_groups_then_the_ceiling(self) -> None:
        settings = ServerSettings.for_state_dir(
            STATE,
            auth=AuthSettings(
                roles=(CustomRoleSettings("auditor", ("audit.read",)),),
                groups=(GroupSettings("dbas", ("operator", "auditor")),),
            ),
        )
        env = Env(settings)
        alice, _ = env.user("alice", "requester", groups=("dbas",))
        assert alice.role_names == {"requester", "operator", "auditor"}
        assert alice.groups == {"dbas"}
        narrow = env.services.tokens.create(
            alice, TokenRequest("alice", SubjectType.USER, scope_ceiling=("auditor",))
        )
        assert env.login(narrow.token).role_names == {"auditor"}

    def test_default_role_applies_when_nothing_resolves(self) -> None:
        env = Env(ServerSettings.for_state_dir(STATE, auth=AuthSettings(default_role="approver")))
        bob, _ = env.user("bob")
        assert bob.role_names == {"approver"}

    def test_no_roles_and_no_default_cannot_create_the_user(self, env: Env) -> None:
        refused(lambda: env.user("nobody"), Validation, "no_roles_resolved")
        assert "nobody" not in env.store.state.users  # rolled back

    def test_ceiling_sharing_no_role_is_403_insufficient_scope(self, env: Env) -> None:
        _, raw = env.user("alice", "requester", "approver")
        env.services.users.update(env.admin, "alice", UserChanges(roles=("approver",)))
        # the initial token's ceiling [requester, approver] still overlaps
        assert env.login(raw).role_names == {"approver"}
        env.services.users.update(env.admin, "alice", UserChanges(roles=("operator",)))
        refused(lambda: env.login(raw), Forbidden, "insufficient_scope")
        assert json.loads(env.store.events("auth.failure")[-1].metadata_json)["code"] == (
            "insufficient_scope"
        )

    def test_agent_token_is_always_agent_default(self, env: Env) -> None:
        agent = env.login(env.file("agent-token"))
        assert agent.is_agent
        assert agent.subject_id == "agent"
        assert agent.role_names == {"agent-default"}

    def test_a_failing_audit_write_never_changes_the_refusal(self, env: Env) -> None:
        env.store.audit_fails = True
        refused(lambda: env.services.authenticate("Bearer nope"), Unauthenticated, "unauthorized")

    def test_failure_events_are_rate_limited_and_count_the_suppressed(self, env: Env) -> None:
        before = len(env.store.events("auth.failure"))
        for _ in range(15):
            refused(lambda: env.services.authenticate(None), Unauthenticated)
        assert len(env.store.events("auth.failure")) - before == 10
        env.clock.advance(1)
        refused(lambda: env.services.authenticate(None), Unauthenticated)
        last = env.store.events("auth.failure")[-1]
        assert json.loads(last.metadata_json)["suppressed_since_last"] == 5

    def test_last_seen_is_written_at_most_every_five_minutes(self, env: Env) -> None:
        _, raw = env.user("alice", "requester")
        env.login(raw)
        first = env.store.state.users["alice"].last_seen_at
        assert first == env.clock.now()
        env.clock.advance(60)
        env.login(raw)
        assert env.store.state.users["alice"].last_seen_at == first
        env.clock.advance(300)
        env.login(raw)
        assert env.store.state.users["alice"].last_seen_at == env.clock.now()


def test_me_lists_effective_roles_and_groups() -> None:
    env = Env(
        ServerSettings.for_state_dir(
            STATE, auth=AuthSettings(groups=(GroupSettings("g", ("approver",)),))
        )
    )
    alice, _ = env.user("alice", "requester", groups=("g",))
    me = env.services.me(alice)
    assert me.subject_id == "alice"
    assert [role.name for role in me.roles] == ["requester", "approver"]
    assert me.groups == ("g",)


# --- tokens --------------------------------------------------------------------------------


class TestTokens:
    def test_create_for_yourself_with_the_auto_ceiling(self, env: Env) -> None:
        issued = env.services.tokens.create(
            env.admin, TokenRequest("admin", SubjectType.USER, name="ci")
        )
        assert issued.token.startswith("dbw_") and len(issued.token) == 36
        assert issued.record.scope_ceiling == ("admin", "requester")
        assert issued.effective_roles == ("admin", "requester")
        assert "user.write" in issued.effective_permissions
        stored = env.store.state.tokens[issued.record.id]
        assert stored.token_hash == token_hash(issued.token)
        assert issued.token not in repr(env.store.state)
        event = env.store.events("token.created")[-1]
        assert event.resource_id == issued.record.id
        assert json.loads(event.metadata_json)["issued_by"] == "admin"

    def test_user_tokens_only_for_yourself(self, env: Env) -> None:
        env.user("alice", "requester")
        error = refused(
            lambda: env.services.tokens.create(env.admin, TokenRequest("alice", SubjectType.USER)),
            Forbidden,
        )
        assert getattr(error, "public", False)

    def test_a_narrow_token_cannot_mint_a_wider_one(self, env: Env) -> None:
        requester_only = env.login(env.file("requester-token"))
        assert requester_only.role_names == {"requester"}
        auto = env.services.tokens.create(requester_only, TokenRequest("admin", SubjectType.USER))
        assert auto.record.scope_ceiling == ("requester",)
        refused(
            lambda: env.services.tokens.create(
                requester_only, TokenRequest("admin", SubjectType.USER, scope_ceiling=("admin",))
            ),
            Forbidden,
        )

    def test_agent_tokens(self, env: Env) -> None:
        issued = env.services.tokens.create(
            env.admin,
            TokenRequest("prod-agent-1", SubjectType.AGENT, scope_ceiling=("agent-default",)),
        )
        agent = env.login(issued.token)
        assert agent.is_agent and agent.subject_id == "prod-agent-1"
        assert issued.effective_roles == ("agent-default",)
        no_ceiling = env.services.tokens.create(
            env.admin, TokenRequest("prod-agent-2", SubjectType.AGENT)
        )
        assert no_ceiling.record.scope_ceiling is None
        refused(
            lambda: env.services.tokens.create(
                env.admin, TokenRequest("a", SubjectType.AGENT, scope_ceiling=("admin",))
            ),
            Validation,
        )

    def test_agent_tokens_need_token_create_agent(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester", "operator")
        refused(
            lambda: env.services.tokens.create(alice, TokenRequest("a1", SubjectType.AGENT)),
            Forbidden,
            "forbidden",
        )

    @pytest.mark.parametrize(
        ("request_", "code"),
        [
            (TokenRequest("admin", SubjectType.USER, scope_ceiling=()), "validation.failed"),
            (TokenRequest("admin", SubjectType.USER, scope_ceiling=("nope",)), "validation.failed"),
            (
                TokenRequest("admin", SubjectType.USER, scope_ceiling=("operator",)),
                "insufficient_scope",
            ),
            (TokenRequest("bad id!", SubjectType.USER), "validation.failed"),
            (TokenRequest("admin", SubjectType.USER, name=""), "validation.failed"),
        ],
    )
    def test_invalid_requests(self, env: Env, request_: TokenRequest, code: str) -> None:
        refused(lambda: env.services.tokens.create(env.admin, request_), Validation, code)

    def test_expiry_must_be_in_the_future(self, env: Env) -> None:
        refused(
            lambda: env.services.tokens.create(
                env.admin, TokenRequest("admin", SubjectType.USER, expires_at=env.clock.now())
            ),
            Validation,
        )

    def test_sprawl_guard_counts_active_unexpired_non_bootstrap_tokens(self) -> None:
        env = Env(
            ServerSettings.for_state_dir(
                STATE,
                auth=AuthSettings(token_policy=TokenPolicySettings(max_active_tokens_per_user=2)),
            )
        )
        first = env.services.tokens.create(
            env.admin,
            TokenRequest(
                "admin", SubjectType.USER, expires_at=env.clock.now() + timedelta(seconds=10)
            ),
        )
        env.services.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        refused(
            lambda: env.services.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER)),
            Validation,
            "token_limit_reached",
        )
        env.clock.advance(10)  # the first one expired: room again
        env.services.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        assert first.record.id

    def test_list_needs_token_list_and_hides_bootstrap_tokens(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        listed = env.services.tokens.list(env.admin, TokenFilters())
        assert [t.subject_id for t in listed] == ["alice"]  # the initial token only
        assert not any(t.is_bootstrap for t in listed)
        refused(lambda: env.services.tokens.list(alice, TokenFilters()), Forbidden)
        filtered = env.services.tokens.list(env.admin, TokenFilters(status=TokenStatus.REVOKED))
        assert filtered == []

    def test_revoke_own_or_any_for_admin(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        bob, _ = env.user("bob", "requester")
        mine = env.services.tokens.create(alice, TokenRequest("alice", SubjectType.USER))
        refused(lambda: env.services.tokens.revoke(bob, mine.record.id), Forbidden)
        revoked = env.services.tokens.revoke(alice, mine.record.id)
        assert revoked.status is TokenStatus.REVOKED and revoked.revoked_at == env.clock.now()
        refused(
            lambda: env.services.tokens.revoke(alice, mine.record.id),
            Conflict,
            "token_already_revoked",
        )
        bobs = env.services.tokens.create(bob, TokenRequest("bob", SubjectType.USER))
        env.services.tokens.revoke(env.admin, bobs.record.id)
        events = env.store.events("token.revoked")
        assert [e.resource_id for e in events] == [mine.record.id, bobs.record.id]

    def test_bootstrap_tokens_are_404_for_revoke_and_inspect(self, env: Env) -> None:
        assert env.admin.token_id is not None
        refused(lambda: env.services.tokens.revoke(env.admin, env.admin.token_id or ""), NotFound)
        refused(lambda: env.services.tokens.inspect(env.admin, env.admin.token_id or ""), NotFound)
        refused(
            lambda: env.services.tokens.revoke(env.admin, "no-such-id"), NotFound, "token_not_found"
        )

    def test_a_user_and_an_agent_with_the_same_id_are_different_owners(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        agents = env.services.tokens.create(env.admin, TokenRequest("alice", SubjectType.AGENT))
        refused(lambda: env.services.tokens.revoke(alice, agents.record.id), Forbidden)

    def test_inspect(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester", "approver")
        mine = env.services.tokens.create(
            alice, TokenRequest("alice", SubjectType.USER, scope_ceiling=("approver",))
        )
        seen = env.services.tokens.inspect(alice, mine.record.id)
        assert seen.resolved_roles == ("requester", "approver")
        assert seen.effective_roles == ("approver",)
        assert "result.view" in seen.effective_permissions
        bob, _ = env.user("bob", "requester")
        refused(lambda: env.services.tokens.inspect(bob, mine.record.id), Forbidden)
        assert env.services.tokens.inspect(env.admin, mine.record.id).record.id == mine.record.id


# --- users ---------------------------------------------------------------------------------


GROUPS = ServerSettings.for_state_dir(
    STATE,
    auth=AuthSettings(
        groups=(GroupSettings("admins", ("admin",)), GroupSettings("dbas", ("operator",)))
    ),
)


class TestUsers:
    def test_create_returns_a_working_initial_token(self) -> None:
        env = Env(GROUPS)
        issued = env.services.users.create(env.admin, NewUser("alice", ("requester",), ("dbas",)))
        assert issued.record.scope_ceiling == ("requester", "operator")
        assert issued.record.provisioning_kind is not None
        assert env.login(issued.token).role_names == {"requester", "operator"}
        kinds = [e.event_type for e in env.store.state.events[-3:]]
        assert kinds == ["user.created", "group.member_added", "token.created"]

    @pytest.mark.parametrize(
        ("new", "kind"),
        [
            (NewUser("alice", ("nope",)), Validation),
            (NewUser("alice", ("requester",), ("nope",)), Validation),
            (NewUser("system", ("requester",)), Validation),
            (NewUser("has space", ("requester",)), Validation),
            (NewUser("admin", ("requester",)), Conflict),
        ],
    )
    def test_create_refusals(self, env: Env, new: NewUser, kind: type[ServerDomainError]) -> None:
        refused(lambda: env.services.users.create(env.admin, new), kind)

    def test_only_user_write_creates(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester", "operator", "approver")
        refused(lambda: env.services.users.create(alice, NewUser("bob", ("requester",))), Forbidden)

    def test_read_yourself_without_user_read(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        env.user("bob", "requester")
        assert env.services.users.get(alice, "alice").user.id == "alice"
        refused(lambda: env.services.users.get(alice, "bob"), Forbidden)
        refused(lambda: env.services.users.list(alice), Forbidden)
        refused(lambda: env.services.users.get(env.admin, "nobody"), NotFound, "user_not_found")
        assert [v.user.id for v in env.services.users.list(env.admin)] == [
            "admin",
            "agent",
            "alice",
            "bob",
        ]

    def test_update_roles_and_groups(self) -> None:
        env = Env(GROUPS)
        env.user("alice", "requester")
        view = env.services.users.update(
            env.admin, "alice", UserChanges(add_roles=("approver",), add_groups=("dbas",))
        )
        assert view.user.roles == ("requester", "approver")
        assert view.groups == ("dbas",)
        view = env.services.users.update(
            env.admin, "alice", UserChanges(rm_roles=("requester",), rm_groups=("dbas",))
        )
        assert (view.user.roles, view.groups) == (("approver",), ())
        view = env.services.users.update(env.admin, "alice", UserChanges(roles=("operator",)))
        assert view.user.roles == ("operator",)
        types = [e.event_type for e in env.store.events() if e.resource_id == "alice"]
        assert types.count("user.updated") == 3
        assert "group.member_added" in types and "group.member_removed" in types

    @pytest.mark.parametrize(
        "changes",
        [
            UserChanges(),
            UserChanges(roles=("requester",), add_roles=("approver",)),
            UserChanges(add_groups=("dbas",), rm_groups=("dbas",)),
            UserChanges(add_roles=("nope",)),
            UserChanges(add_groups=("nope",)),
        ],
    )
    def test_update_refusals(self, changes: UserChanges) -> None:
        env = Env(GROUPS)
        env.user("alice", "requester")
        refused(lambda: env.services.users.update(env.admin, "alice", changes), Validation)

    def test_the_last_admin_is_protected(self) -> None:
        env = Env(GROUPS)
        for action in (
            lambda: env.services.users.suspend(env.admin, "admin"),
            lambda: env.services.users.delete(env.admin, "admin"),
            lambda: env.services.users.update(env.admin, "admin", UserChanges(rm_roles=("admin",))),
        ):
            refused(action, Validation, "last_admin")
        env.user("root2", "requester", groups=("admins",))  # admin through a group
        env.services.users.update(env.admin, "admin", UserChanges(rm_roles=("admin",)))

    def test_suspend_revokes_tokens_and_calls_the_hook(self, env: Env) -> None:
        alice, raw = env.user("alice", "requester")
        extra = env.services.tokens.create(alice, TokenRequest("alice", SubjectType.USER))
        outcome = env.services.users.suspend(env.admin, "alice")
        assert set(outcome.revoked_tokens) == {alice.token_id, extra.record.id}
        assert outcome.cancelled_requests == ("req-of-alice",)
        assert env.cancelled == ["alice"]
        refused(lambda: env.login(raw), Unauthenticated, "token_revoked")
        refused(lambda: env.services.users.suspend(env.admin, "alice"), Conflict)
        refused(
            lambda: env.services.users.reissue_initial_token(env.admin, "alice"),
            Conflict,
            "user_suspended",
        )
        view = env.services.users.activate(env.admin, "alice")
        assert view.user.status is UserStatus.ACTIVE
        refused(
            lambda: env.services.users.activate(env.admin, "alice"), Conflict, "user_not_suspended"
        )
        refused(lambda: env.login(raw), Unauthenticated, "token_revoked")  # tokens stay revoked
        reissued = env.services.users.reissue_initial_token(env.admin, "alice")
        assert env.login(reissued.token).subject_id == "alice"
        assert [e.event_type for e in env.store.events() if e.resource_id == "alice"][-2:] == [
            "user.suspended",
            "user.activated",
        ]

    def test_a_failing_hook_does_not_undo_the_suspension(self) -> None:
        def broken(_user_id: str) -> None:
            raise RuntimeError("work store down")

        env = Env(hook=broken)
        env.user("alice", "requester")
        outcome = env.services.users.suspend(env.admin, "alice")
        assert outcome.cancelled_requests == ()
        assert env.store.state.users["alice"].is_suspended

    def test_delete_is_soft(self) -> None:
        env = Env(GROUPS)
        _, raw = env.user("alice", "requester", groups=("dbas",))
        outcome = env.services.users.delete(env.admin, "alice")
        assert len(outcome.revoked_tokens) == 1
        assert env.store.state.users["alice"].is_deleted
        assert env.store.state.members == set()
        refused(lambda: env.login(raw), Unauthenticated)
        refused(lambda: env.services.users.get(env.admin, "alice"), Gone, "user_deleted")
        refused(lambda: env.services.users.delete(env.admin, "alice"), Gone)
        refused(
            lambda: env.services.users.create(env.admin, NewUser("alice", ("requester",))), Conflict
        )
        assert "alice" not in [v.user.id for v in env.services.users.list(env.admin)]
        assert "alice" in [
            v.user.id for v in env.services.users.list(env.admin, include_deleted=True)
        ]

    def test_reissue_revokes_the_old_initial_token_only(self, env: Env) -> None:
        alice, old = env.user("alice", "requester")
        own = env.services.tokens.create(alice, TokenRequest("alice", SubjectType.USER))
        reissued = env.services.users.reissue_initial_token(env.admin, "alice")
        assert reissued.revoked_tokens == (alice.token_id,)
        refused(lambda: env.login(old), Unauthenticated, "token_revoked")
        assert env.login(own.token).subject_id == "alice"
        assert env.login(reissued.token).subject_id == "alice"
        refused(lambda: env.services.users.reissue_initial_token(alice, "alice"), Forbidden)
        assert env.store.events("token.reissued_initial")[-1].resource_id == reissued.record.id

    def test_a_failed_write_leaves_nothing_behind(self, env: Env) -> None:
        env.store.audit_fails = True
        with pytest.raises(RuntimeError):
            env.services.users.create(env.admin, NewUser("alice", ("requester",)))
        env.store.audit_fails = False
        assert "alice" not in env.store.state.users
        assert not [t for t in env.store.state.tokens.values() if t.subject_id == "alice"]


# --- audit ---------------------------------------------------------------------------------


class TestAudit:
    def test_list_filters_and_limits(self, env: Env) -> None:
        for i in range(5):
            env.user(f"u{i}", "requester")
        events = env.services.audit.list(
            env.admin, AuditFilters(event_type="user.created"), limit=3
        )
        assert [e.resource_id for e in events] == ["u4", "u3", "u2"]
        page2 = env.services.audit.list(
            env.admin, AuditFilters(event_type="user.created"), limit=3, offset=3
        )
        assert [e.resource_id for e in page2] == ["u1", "u0", "agent"]
        assert len(env.services.audit.list(env.admin, AuditFilters(), limit=10_000)) <= 200
        refused(lambda: env.services.audit.list(env.admin, AuditFilters(), limit=0), Validation)
        refused(lambda: env.services.audit.list(env.admin, AuditFilters(), offset=-1), Validation)

    def test_audit_read_is_admin_and_operator(self, env: Env) -> None:
        operator, _ = env.user("op", "operator")
        requester, _ = env.user("req", "requester")
        assert env.services.audit.verify(operator).valid
        refused(lambda: env.services.audit.list(requester, AuditFilters()), Forbidden)
        refused(lambda: env.services.audit.verify(requester), Forbidden)

    def test_verify_names_a_tampered_event(self, env: Env) -> None:
        events = env.store.state.events
        victim = events[2]
        events[2] = replace(victim, actor_id="mallory")
        verdict = env.services.audit.verify(env.admin)
        assert (verdict.valid, verdict.first_broken_id) == (False, victim.id)


# --- bootstrap -----------------------------------------------------------------------------


class TestBootstrap:
    def test_first_start_creates_users_tokens_and_files(self, env: Env) -> None:
        assert set(env.files.files) == {
            str(STATE / n) for n in ("admin-token", "agent-token", "requester-token")
        }
        assert env.store.state.users["admin"].roles == ("admin", "requester")
        assert env.store.state.users["agent"].roles == ("agent-default",)
        requester = env.login(env.file("requester-token"))
        assert (requester.subject_id, requester.role_names) == ("admin", {"requester"})
        assert env.file("requester-token") != env.file("admin-token")
        assert all(t.is_bootstrap for t in env.store.state.tokens.values())

    def test_a_complete_bootstrap_is_left_alone(self, env: Env) -> None:
        before = dict(env.store.state.tokens)
        outcome = env.services.bootstrap(STATE)
        assert outcome.action is BootstrapAction.EXISTING
        assert env.store.state.tokens == before

    def test_missing_files_are_fatal_with_the_force_hint(self, env: Env) -> None:
        del env.files.files[str(STATE / "agent-token")]
        error = refused_bootstrap(env)
        assert "agent-token" in str(error) and "--force-bootstrap" in str(error)

    def test_a_file_holding_another_token_is_fatal(self, env: Env) -> None:
        env.files.files[str(STATE / "admin-token")] = "dbw_" + "0" * 32
        assert "do not hold the active token" in str(refused_bootstrap(env))

    def test_an_incomplete_set_is_fatal(self, env: Env) -> None:
        agent_token = next(
            t for t in env.store.state.tokens.values() if t.name == "bootstrap-agent"
        )
        env.store.state.tokens[agent_token.id] = replace(agent_token, status=TokenStatus.REVOKED)
        assert "2 of 3" in str(refused_bootstrap(env))

    def test_tokens_revoked_by_an_operator_are_not_recreated(self, env: Env) -> None:
        for token in list(env.store.state.tokens.values()):
            env.store.state.tokens[token.id] = replace(token, status=TokenStatus.REVOKED)
        outcome = env.services.bootstrap(STATE)
        assert outcome.action is BootstrapAction.REVOKED
        assert len(env.store.state.tokens) == 3  # nothing new issued
        assert not any(t.is_active for t in env.store.state.tokens.values())

    def test_force_rotates(self, env: Env) -> None:
        old = {name: env.file(name) for name in ("admin-token", "agent-token", "requester-token")}
        outcome = env.services.bootstrap(STATE, force=True)
        assert outcome.action is BootstrapAction.ROTATED
        assert len(outcome.revoked_tokens) == 3
        for name, raw in old.items():
            refused(lambda raw=raw: env.login(raw), Unauthenticated, "token_revoked")  # type: ignore[misc]
            assert env.file(name) != raw
        assert env.login(env.file("admin-token")).role_names == {"admin", "requester"}
        assert env.services.bootstrap(STATE).action is BootstrapAction.EXISTING

    def test_force_is_the_way_back_in(self, env: Env) -> None:
        admin = env.store.state.users["admin"]
        env.store.state.users["admin"] = replace(
            admin, status=UserStatus.SUSPENDED, roles=("requester",)
        )
        env.services.bootstrap(STATE, force=True)
        restored = env.store.state.users["admin"]
        assert restored.status is UserStatus.ACTIVE
        assert set(restored.roles) == {"admin", "requester"}
        assert env.login(env.file("admin-token")).role_names == {"admin", "requester"}

    def test_a_failed_file_write_is_reported_at_the_next_start(self) -> None:
        store_env = Env()
        store_env.files.fail_on = "agent-token"
        with pytest.raises(OSError):
            store_env.services.bootstrap(STATE, force=True)
        store_env.files.fail_on = None
        assert "--force-bootstrap" in str(refused_bootstrap(store_env))
        assert store_env.services.bootstrap(STATE, force=True).action is BootstrapAction.ROTATED


def refused_bootstrap(env: Env) -> BootstrapError:
    with pytest.raises(BootstrapError) as caught:
        env.services.bootstrap(STATE)
    return caught.value
