"""First start: bootstrap users, tokens and files; the checks at every later start."""

from __future__ import annotations

from dataclasses import replace

import pytest

from application.server.identity.bootstrap import BootstrapAction, BootstrapError
from application.server.ports.identity import UserStatus
from domain.server.api_tokens import TokenStatus
from domain.server.errors import Unauthenticated
from tests.unit.application.server.identity.harness import STATE, Env, refused


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
        outcome = env.bootstrapper.bootstrap(STATE)
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
        outcome = env.bootstrapper.bootstrap(STATE)
        assert outcome.action is BootstrapAction.REVOKED
        assert len(env.store.state.tokens) == 3  # nothing new issued
        assert not any(t.is_active for t in env.store.state.tokens.values())

    def test_force_rotates(self, env: Env) -> None:
        old = {name: env.file(name) for name in ("admin-token", "agent-token", "requester-token")}
        outcome = env.bootstrapper.bootstrap(STATE, force=True)
        assert outcome.action is BootstrapAction.ROTATED
        assert len(outcome.revoked_tokens) == 3
        for name, raw in old.items():
            refused(lambda raw=raw: env.login(raw), Unauthenticated, "token_revoked")  # type: ignore[misc]
            assert env.file(name) != raw
        assert env.login(env.file("admin-token")).role_names == {"admin", "requester"}
        assert env.bootstrapper.bootstrap(STATE).action is BootstrapAction.EXISTING

    def test_force_is_the_way_back_in(self, env: Env) -> None:
        admin = env.store.state.users["admin"]
        env.store.state.users["admin"] = replace(
            admin, status=UserStatus.SUSPENDED, roles=("requester",)
        )
        env.bootstrapper.bootstrap(STATE, force=True)
        restored = env.store.state.users["admin"]
        assert restored.status is UserStatus.ACTIVE
        assert set(restored.roles) == {"admin", "requester"}
        assert env.login(env.file("admin-token")).role_names == {"admin", "requester"}

    def test_a_failed_file_write_is_reported_at_the_next_start(self) -> None:
        store_env = Env()
        store_env.files.fail_on = "agent-token"
        with pytest.raises(OSError):
            store_env.bootstrapper.bootstrap(STATE, force=True)
        store_env.files.fail_on = None
        assert "--force-bootstrap" in str(refused_bootstrap(store_env))
        assert store_env.bootstrapper.bootstrap(STATE, force=True).action is BootstrapAction.ROTATED


def refused_bootstrap(env: Env) -> BootstrapError:
    with pytest.raises(BootstrapError) as caught:
        env.bootstrapper.bootstrap(STATE)
    return caught.value
