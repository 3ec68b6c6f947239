"""User administration: create, read, update, suspend, activate, delete, reissue."""

from __future__ import annotations

import pytest

from application.server.identity.tokens import TokenRequest
from application.server.identity.users import NewUser, UserChanges
from application.server.ports.identity import UserStatus
from application.server.settings import AuthSettings, GroupSettings, ServerSettings
from domain.server.api_tokens import SubjectType
from domain.server.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    ServerDomainError,
    Unauthenticated,
    Validation,
)
from tests.unit.application.server.identity.harness import STATE, Env, refused

GROUPS = ServerSettings.for_state_dir(
    STATE,
    auth=AuthSettings(
        groups=(GroupSettings("admins", ("admin",)), GroupSettings("dbas", ("operator",)))
    ),
)


class TestUsers:
    def test_create_returns_a_working_initial_token(self) -> None:
        env = Env(GROUPS)
        issued = env.users.create(env.admin, NewUser("alice", ("requester",), ("dbas",)))
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
        refused(lambda: env.users.create(env.admin, new), kind)

    def test_only_user_write_creates(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester", "operator", "approver")
        refused(lambda: env.users.create(alice, NewUser("bob", ("requester",))), Forbidden)

    def test_read_yourself_without_user_read(self, env: Env) -> None:
        alice, _ = env.user("alice", "requester")
        env.user("bob", "requester")
        assert env.users.get(alice, "alice").user.id == "alice"
        refused(lambda: env.users.get(alice, "bob"), Forbidden)
        refused(lambda: env.users.list(alice), Forbidden)
        refused(lambda: env.users.get(env.admin, "nobody"), NotFound, "user.not_found")
        assert [v.user.id for v in env.users.list(env.admin)] == [
            "admin",
            "agent",
            "alice",
            "bob",
        ]

    def test_update_roles_and_groups(self) -> None:
        env = Env(GROUPS)
        env.user("alice", "requester")
        view = env.users.update(
            env.admin, "alice", UserChanges(add_roles=("approver",), add_groups=("dbas",))
        )
        assert view.user.roles == ("requester", "approver")
        assert view.groups == ("dbas",)
        view = env.users.update(
            env.admin, "alice", UserChanges(rm_roles=("requester",), rm_groups=("dbas",))
        )
        assert (view.user.roles, view.groups) == (("approver",), ())
        view = env.users.update(env.admin, "alice", UserChanges(roles=("operator",)))
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
        refused(lambda: env.users.update(env.admin, "alice", changes), Validation)

    def test_the_last_admin_is_protected(self) -> None:
        env = Env(GROUPS)
        for action in (
            lambda: env.users.suspend(env.admin, "admin"),
            lambda: env.users.delete(env.admin, "admin"),
            lambda: env.users.update(env.admin, "admin", UserChanges(rm_roles=("admin",))),
        ):
            refused(action, Validation, "last_admin")
        env.user("root2", "requester", groups=("admins",))  # admin through a group
        env.users.update(env.admin, "admin", UserChanges(rm_roles=("admin",)))

    def test_suspend_revokes_tokens_and_calls_the_hook(self, env: Env) -> None:
        alice, raw = env.user("alice", "requester")
        extra = env.tokens.create(alice, TokenRequest("alice", SubjectType.USER))
        outcome = env.users.suspend(env.admin, "alice")
        assert set(outcome.revoked_tokens) == {alice.token_id, extra.record.id}
        assert outcome.cancelled_requests == ("req-of-alice",)
        assert env.cancelled == [("alice", "user suspended")]
        refused(lambda: env.login(raw), Unauthenticated, "token_revoked")
        refused(lambda: env.users.suspend(env.admin, "alice"), Conflict)
        refused(
            lambda: env.users.reissue_initial_token(env.admin, "alice"),
            Conflict,
            "user_suspended",
        )
        view = env.users.activate(env.admin, "alice")
        assert view.user.status is UserStatus.ACTIVE
        refused(lambda: env.users.activate(env.admin, "alice"), Conflict, "user_not_suspended")
        refused(lambda: env.login(raw), Unauthenticated, "token_revoked")  # tokens stay revoked
        reissued = env.users.reissue_initial_token(env.admin, "alice")
        assert env.login(reissued.token).subject_id == "alice"
        assert [e.event_type for e in env.store.events() if e.resource_id == "alice"][-2:] == [
            "user.suspended",
            "user.activated",
        ]

    def test_a_failing_hook_does_not_undo_the_suspension(self) -> None:
        def broken(_user_id: str, _reason: str) -> None:
            raise RuntimeError("work store down")

        env = Env(hook=broken)
        env.user("alice", "requester")
        outcome = env.users.suspend(env.admin, "alice")
        assert outcome.cancelled_requests == ()
        assert env.store.state.users["alice"].is_suspended

    def test_delete_is_soft(self) -> None:
        env = Env(GROUPS)
        _, raw = env.user("alice", "requester", groups=("dbas",))
        outcome = env.users.delete(env.admin, "alice")
        assert len(outcome.revoked_tokens) == 1
        assert env.cancelled == [("alice", "user deleted")]
        assert env.store.state.users["alice"].is_deleted
        assert env.store.state.members == set()
        refused(lambda: env.login(raw), Unauthenticated)
        refused(lambda: env.users.get(env.admin, "alice"), Gone, "user_deleted")
        refused(lambda: env.users.delete(env.admin, "alice"), Gone)
        refused(lambda: env.users.create(env.admin, NewUser("alice", ("requester",))), Conflict)
        assert "alice" not in [v.user.id for v in env.users.list(env.admin)]
        assert "alice" in [v.user.id for v in env.users.list(env.admin, include_deleted=True)]

    def test_reissue_revokes_the_old_initial_token_only(self, env: Env) -> None:
        alice, old = env.user("alice", "requester")
        own = env.tokens.create(alice, TokenRequest("alice", SubjectType.USER))
        reissued = env.users.reissue_initial_token(env.admin, "alice")
        assert reissued.revoked_tokens == (alice.token_id,)
        refused(lambda: env.login(old), Unauthenticated, "token_revoked")
        assert env.login(own.token).subject_id == "alice"
        assert env.login(reissued.token).subject_id == "alice"
        refused(lambda: env.users.reissue_initial_token(alice, "alice"), Forbidden)
        assert env.store.events("token.reissued_initial")[-1].resource_id == reissued.record.id

    def test_a_failed_write_leaves_nothing_behind(self, env: Env) -> None:
        env.store.audit_fails = True
        with pytest.raises(RuntimeError):
            env.users.create(env.admin, NewUser("alice", ("requester",)))
        env.store.audit_fails = False
        assert "alice" not in env.store.state.users
        assert not [t for t in env.store.state.tokens.values() if t.subject_id == "alice"]
