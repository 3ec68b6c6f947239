"""Authentication: bearer header → principal, refusals audited and rate limited, `/api/me`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from application.server.identity.authentication import Me
from application.server.identity.tokens import TokenRequest
from application.server.identity.users import UserChanges
from application.server.ports.identity import LifecycleState, UserStatus
from application.server.settings import (
    AuthSettings,
    CustomRoleSettings,
    GroupSettings,
    ServerSettings,
)
from domain.server.api_tokens import SubjectType
from domain.server.errors import Forbidden, Unauthenticated, Validation
from tests.unit.application.server.identity.harness import STATE, Env, refused


class TestAuthenticate:
    @pytest.mark.parametrize(
        "header",
        [None, "", "Bearer", "bearer dbw_0123456789abcdef0123456789abcdef", "Token x", "Basic abc"],
    )
    def test_missing_or_wrong_scheme_is_401_and_audited(self, env: Env, header: str | None) -> None:
        refused(lambda: env.authenticator.authenticate(header), Unauthenticated, "unauthorized")
        failure = env.store.events("auth.failure")[-1]
        assert (failure.actor_id, failure.outcome, failure.event_category) == (
            "anonymous",
            "denied",
            "auth",
        )
        assert json.loads(failure.metadata_json)["code"] == "unauthorized"

    def test_jwt_is_refused_while_oidc_is_off(self, env: Env) -> None:
        refused(
            lambda: env.authenticator.authenticate("Bearer eyJhbGciOi.x.y"),
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
        issued = env.tokens.create(
            env.admin,
            TokenRequest(
                "admin", SubjectType.USER, expires_at=env.clock.now() + timedelta(hours=1)
            ),
        )
        assert env.login(issued.token).subject_id == "admin"
        env.clock.advance(3600)
        refused(lambda: env.login(issued.token), Unauthenticated, "token_expired")
        other = env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        env.tokens.revoke(env.admin, other.record.id)
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
        narrow = env.tokens.create(
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
        env.users.update(env.admin, "alice", UserChanges(roles=("approver",)))
        # the initial token's ceiling [requester, approver] still overlaps
        assert env.login(raw).role_names == {"approver"}
        env.users.update(env.admin, "alice", UserChanges(roles=("operator",)))
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
        refused(
            lambda: env.authenticator.authenticate("Bearer nope"), Unauthenticated, "unauthorized"
        )

    def test_failure_events_are_rate_limited_and_count_the_suppressed(self, env: Env) -> None:
        before = len(env.store.events("auth.failure"))
        for _ in range(15):
            refused(lambda: env.authenticator.authenticate(None), Unauthenticated)
        assert len(env.store.events("auth.failure")) - before == 10
        env.clock.advance(1)
        refused(lambda: env.authenticator.authenticate(None), Unauthenticated)
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
    me = Me.of(alice)
    assert me.subject_id == "alice"
    assert [role.name for role in me.roles] == ["requester", "approver"]
    assert me.groups == ("g",)
