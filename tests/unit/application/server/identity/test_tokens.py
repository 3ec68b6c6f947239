"""API tokens: create (ceilings, agents, limits), list, revoke and inspect."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from application.server.identity.tokens import TokenRequest
from application.server.ports.identity import TokenFilters
from application.server.settings import AuthSettings, ServerSettings, TokenPolicySettings
from domain.server.api_tokens import SubjectType, TokenStatus, token_hash
from domain.server.errors import Conflict, Forbidden, NotFound, Validation
from tests.unit.application.server.identity.harness import STATE, Env, refused


class TestTokens:
    def test_create_for_yourself_with_the_auto_ceiling(self, env: Env) -> None:
        issued = env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER, name="ci"))
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
            lambda: env.tokens.create(env.admin, TokenRequest("alice", SubjectType.USER)),
            Forbidden,
        )
        assert getattr(error, "public", False)

    def test_a_narrow_token_cannot_mint_a_wider_one(self, env: Env) -> None:
        requester_only = env.login(env.file("requester-token"))
        assert requester_only.role_names == {"requester"}
        auto = env.tokens.create(requester_only, TokenRequest("admin", SubjectType.USER))
        assert auto.record.scope_ceiling == ("requester",)
        refused(
            lambda: env.tokens.create(
                requester_only, TokenRequest("admin", SubjectType.USER, scope_ceiling=("admin",))
            ),
            Forbidden,
        )

    def test_agent_tokens(self, env: Env) -> None:
        issued = env.tokens.create(
            env.admin,
            TokenRequest("prod-agent-1", SubjectType.AGENT, scope_ceiling=("agent-default",)),
        )
        agent = env.login(issued.token)
        assert agent.is_agent and agent.subject_id == "prod-agent-1"
        assert issued.effective_roles == ("agent-default",)
        no_ceiling = env.tokens.create(env.admin, TokenRequest("prod-agent-2", SubjectType.AGENT))
        assert no_ceiling.record.scope_ceiling is None
        refused(
            lambda: env.tokens.create(
                env.admin, TokenRequest("a", SubjectType.AGENT, scope_ceiling=("admin",))
            ),
            Validation,
        )

    def test_agent_tokens_need_token_create_agent(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester", "operator")
        refused(
            lambda: env.tokens.create(alice, TokenRequest("a1", SubjectType.AGENT)),
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
        refused(lambda: env.tokens.create(env.admin, request_), Validation, code)

    def test_expiry_must_be_in_the_future(self, env: Env) -> None:
        refused(
            lambda: env.tokens.create(
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
        first = env.tokens.create(
            env.admin,
            TokenRequest(
                "admin", SubjectType.USER, expires_at=env.clock.now() + timedelta(seconds=10)
            ),
        )
        env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        refused(
            lambda: env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER)),
            Validation,
            "token_limit_reached",
        )
        env.clock.advance(10)  # the first one expired: room again
        env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        assert first.record.id

    def test_list_needs_token_list_and_hides_bootstrap_tokens(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        listed = env.tokens.list(env.admin, TokenFilters())
        assert [t.subject_id for t in listed] == ["alice"]  # the initial token only
        assert not any(t.is_bootstrap for t in listed)
        refused(lambda: env.tokens.list(alice, TokenFilters()), Forbidden)
        filtered = env.tokens.list(env.admin, TokenFilters(status=TokenStatus.REVOKED))
        assert filtered == []

    def test_revoke_own_or_any_for_admin(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        bob, _ = env.user("bob", "requester")
        mine = env.tokens.create(alice, TokenRequest("alice", SubjectType.USER))
        refused(lambda: env.tokens.revoke(bob, mine.record.id), Forbidden)
        revoked = env.tokens.revoke(alice, mine.record.id)
        assert revoked.status is TokenStatus.REVOKED and revoked.revoked_at == env.clock.now()
        refused(
            lambda: env.tokens.revoke(alice, mine.record.id),
            Conflict,
            "token_already_revoked",
        )
        bobs = env.tokens.create(bob, TokenRequest("bob", SubjectType.USER))
        env.tokens.revoke(env.admin, bobs.record.id)
        events = env.store.events("token.revoked")
        assert [e.resource_id for e in events] == [mine.record.id, bobs.record.id]

    def test_bootstrap_tokens_are_404_for_revoke_and_inspect(self, env: Env) -> None:
        assert env.admin.token_id is not None
        refused(lambda: env.tokens.revoke(env.admin, env.admin.token_id or ""), NotFound)
        refused(lambda: env.tokens.inspect(env.admin, env.admin.token_id or ""), NotFound)
        refused(lambda: env.tokens.revoke(env.admin, "no-such-id"), NotFound, "token.not_found")

    def test_a_user_and_an_agent_with_the_same_id_are_different_owners(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        agents = env.tokens.create(env.admin, TokenRequest("alice", SubjectType.AGENT))
        refused(lambda: env.tokens.revoke(alice, agents.record.id), Forbidden)

    def test_inspect(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester", "approver")
        mine = env.tokens.create(
            alice, TokenRequest("alice", SubjectType.USER, scope_ceiling=("approver",))
        )
        seen = env.tokens.inspect(alice, mine.record.id)
        assert seen.resolved_roles == ("requester", "approver")
        assert seen.effective_roles == ("approver",)
        assert "result.view" in seen.effective_permissions
        bob, _ = env.user("bob", "requester")
        refused(lambda: env.tokens.inspect(bob, mine.record.id), Forbidden)
        assert env.tokens.inspect(env.admin, mine.record.id).record.id == mine.record.id
