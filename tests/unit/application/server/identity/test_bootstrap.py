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

    def test_missing_or_stale_files_are_written_again_from_the_store(self, env: Env) -> None:
        agent, admin = env.file("agent-token"), env.file("admin-token")
        del env.files.files[str(STATE / "agent-token")]
        env.files.files[str(STATE / "admin-token")] = "dbw_" + "0" * 32
        outcome = env.bootstrapper.bootstrap(STATE)
        assert outcome.action is BootstrapAction.EXISTING
        assert set(outcome.files) == {STATE / "agent-token", STATE / "admin-token"}
        assert (env.file("agent-token"), env.file("admin-token")) == (agent, admin)

    def test_a_replica_with_its_own_state_dir_gets_the_token_files(self, env: Env) -> None:
        other = STATE.parent / "replica-b"
        outcome = env.bootstrapper.bootstrap(other)
        assert outcome.action is BootstrapAction.EXISTING and len(outcome.files) == 3
        for name in ("admin-token", "agent-token", "requester-token"):
            assert env.files.read_secret(other / name) == env.file(name)

    def test_the_store_keeps_the_tokens_sealed_never_in_clear(self, env: Env) -> None:
        sealed = env.store.state.secrets["token:bootstrap-admin"]
        assert env.file("admin-token").encode() not in sealed
        assert env.cipher.open("token:bootstrap-admin", sealed).decode() == env.file("admin-token")

    def test_files_of_a_server_before_sealed_copies_are_imported_once(self, env: Env) -> None:
        env.store.state.secrets.clear()  # as a store migrated from schema version 2
        outcome = env.bootstrapper.bootstrap(STATE)
        assert outcome.action is BootstrapAction.EXISTING and outcome.files == ()
        assert len(env.store.state.secrets) == 3
        sealed = env.store.state.secrets["token:bootstrap-agent"]
        assert env.cipher.open("token:bootstrap-agent", sealed).decode() == env.file("agent-token")

    def test_missing_files_without_a_sealed_copy_are_fatal_with_the_force_hint(
        self, env: Env
    ) -> None:
        env.store.state.secrets.clear()
        del env.files.files[str(STATE / "agent-token")]
        error = refused_bootstrap(env)
        assert "agent-token" in str(error) and "--force-bootstrap" in str(error)

    def test_a_file_holding_another_token_without_a_sealed_copy_is_fatal(self, env: Env) -> None:
        env.store.state.secrets.clear()
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

    def test_a_failed_file_write_is_repaired_from_the_store_at_the_next_start(self) -> None:
        store_env = Env()
        store_env.files.fail_on = "agent-token"
        with pytest.raises(OSError):
            store_env.bootstrapper.bootstrap(STATE, force=True)
        store_env.files.fail_on = None
        outcome = store_env.bootstrapper.bootstrap(STATE)
        assert outcome.action is BootstrapAction.EXISTING
        assert STATE / "agent-token" in outcome.files
        assert store_env.login(store_env.file("agent-token")).subject_id == "agent"

    def test_a_rotation_reaches_the_other_replicas_state_dirs(self, env: Env) -> None:
        other = STATE.parent / "replica-b"
        env.bootstrapper.bootstrap(other)
        env.bootstrapper.bootstrap(STATE, force=True)
        env.bootstrapper.bootstrap(other)
        assert env.files.read_secret(other / "admin-token") == env.file("admin-token")


def refused_bootstrap(env: Env) -> BootstrapError:
    with pytest.raises(BootstrapError) as caught:
        env.bootstrapper.bootstrap(STATE)
    return caught.value
