"""User administration: `/api/users…` (create, read, update, suspend, activate, delete,
reissue the initial token).

The last active admin cannot be suspended, deleted or stripped of `admin`, as in the
reference; our change, deliberate: the check runs under an identity lock, so two replicas
cannot both pass it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from application.server.audit_events import SYSTEM_ACTOR
from application.server.identity.authentication import ANONYMOUS_ACTOR
from application.server.identity.events import identity_event, token_created_event
from application.server.identity.issuing import check_subject_id, issue_token
from application.server.identity.roles import RoleDirectory, role_names, unique_names
from application.server.ports.identity import IdentityRepository, UserRecord, UserStatus
from application.server.ports.services import ServerClock
from application.server.ports.store import Store
from domain.server.api_tokens import ProvisioningKind, SubjectType, TokenRecord
from domain.server.audit import AuditEvent
from domain.server.errors import Conflict, Forbidden, Gone, NotFound, Validation
from domain.server.rbac import Permission, Principal, authorize
from domain.server.rbac import User as UserContext

__all__ = [
    "InitialToken",
    "NewUser",
    "UserChanges",
    "UserDisabledHook",
    "UserOutcome",
    "UserService",
    "UserView",
]

log = logging.getLogger("dbward.server.identity")

#: Audit actor names; no user may take them.
RESERVED_USER_IDS = frozenset({SYSTEM_ACTOR, ANONYMOUS_ACTOR})
INITIAL_TOKEN_NAME = "initial"  # noqa: S105 - a label, not a secret

#: Called after a user was suspended or deleted (its requests should be cancelled); may
#: return the ids of the requests it cancelled.
UserDisabledHook = Callable[[str, str], Sequence[str] | None]


@dataclass(frozen=True)
class NewUser:
    id: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    display_name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class UserChanges:
    """`PATCH /api/users/{id}`: `roles` replaces the set; the rest add or remove."""

    roles: tuple[str, ...] | None = None
    add_roles: tuple[str, ...] = ()
    rm_roles: tuple[str, ...] = ()
    add_groups: tuple[str, ...] = ()
    rm_groups: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.roles is None and not (
            self.add_roles or self.rm_roles or self.add_groups or self.rm_groups
        )


@dataclass(frozen=True)
class UserView:
    user: UserRecord
    groups: tuple[str, ...]


@dataclass(frozen=True)
class UserOutcome:
    """Suspend and delete: what went with the user."""

    user_id: str
    revoked_tokens: tuple[str, ...]
    cancelled_requests: tuple[str, ...]


@dataclass(frozen=True)
class InitialToken:
    """A user's initial token (create and reissue): `token` is the plaintext, shown once."""

    user: UserView
    record: TokenRecord
    token: str
    revoked_tokens: tuple[str, ...] = ()


class UserService:
    """`/api/users…` (docs/server.md §4.5, §8.2)."""

    def __init__(
        self,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
        roles: RoleDirectory,
        *,
        on_user_disabled: UserDisabledHook | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._random_bytes = random_bytes
        self._roles = roles
        self._on_user_disabled = on_user_disabled

    # reads

    def list(self, principal: Principal, *, include_deleted: bool = False) -> list[UserView]:
        authorize(principal, Permission.USER_READ)
        with self._store.read() as session:
            users = session.identity.list_users(include_deleted=include_deleted)
            groups = session.identity.memberships()
        return [UserView(user, tuple(groups.get(user.id, ()))) for user in users]

    def get(self, principal: Principal, user_id: str) -> UserView:
        authorize(principal, Permission.USER_READ, UserContext(user_id))
        with self._store.read() as session:
            user = self._existing(session.identity, user_id)
            return UserView(user, tuple(session.identity.groups_of(user_id)))

    # writes

    def create(self, principal: Principal, new: NewUser) -> InitialToken:
        authorize(principal, Permission.USER_WRITE)
        check_subject_id(new.id, "user id")
        if new.id in RESERVED_USER_IDS:
            raise Validation(f"user id {new.id!r} is reserved")
        roles, groups = unique_names(new.roles), unique_names(new.groups)
        self._check_roles(roles)
        self._check_groups(groups)
        now = self._clock.now()
        user = UserRecord(
            id=new.id,
            roles=roles,
            created_at=now,
            updated_at=now,
            display_name=new.display_name,
            email=new.email,
        )
        with self._store.write() as session:
            repo = session.identity
            if not repo.add_user(user):
                raise Conflict(f"user {new.id!r} already exists", code="user_exists")
            for group in groups:
                repo.add_member(group, new.id, now)
            raw, record = self._initial_token(user, groups, now)
            repo.add_token(record)
            session.audit.append(
                self._event(
                    "user.created",
                    principal,
                    now,
                    new.id,
                    {"roles": list(roles), "groups": list(groups)},
                )
            )
            for group in groups:
                session.audit.append(
                    self._event("group.member_added", principal, now, new.id, {"group": group})
                )
            session.audit.append(token_created_event(self._new_id, now, principal, record))
        return InitialToken(UserView(user, groups), record, raw)

    def update(self, principal: Principal, user_id: str, changes: UserChanges) -> UserView:
        authorize(principal, Permission.USER_WRITE)
        if changes.is_empty:
            raise Validation(
                "nothing to change: give roles, add_roles, rm_roles, add_groups or rm_groups"
            )
        if changes.roles is not None and (changes.add_roles or changes.rm_roles):
            raise Validation("roles replaces the set: do not combine it with add_roles / rm_roles")
        both = set(changes.add_groups) & set(changes.rm_groups)
        if both:
            raise Validation(
                f"group(s) in both add_groups and rm_groups: {', '.join(sorted(both))}"
            )
        both = set(changes.add_roles) & set(changes.rm_roles)
        if both:
            raise Validation(f"role(s) in both add_roles and rm_roles: {', '.join(sorted(both))}")
        self._check_roles(changes.roles or ())
        self._check_roles(changes.add_roles)
        self._check_groups(changes.add_groups)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            user = self._existing(repo, user_id)
            old_groups = tuple(repo.groups_of(user_id))
            if changes.roles is not None:
                roles = unique_names(changes.roles)
            else:
                roles = unique_names(
                    r for r in (*user.roles, *changes.add_roles) if r not in changes.rm_roles
                )
            added = tuple(g for g in unique_names(changes.add_groups) if g not in old_groups)
            removed = tuple(g for g in unique_names(changes.rm_groups) if g in old_groups)
            groups = tuple(sorted({*old_groups, *added} - set(removed)))
            loses_admin = self._roles.holds_admin(
                user.roles, old_groups
            ) and not self._roles.holds_admin(roles, groups)
            if loses_admin and not user.is_suspended:
                self._guard_last_admin(repo, user_id, "remove admin from")
            if roles != user.roles and not repo.set_roles(user_id, roles, now):
                raise Gone(f"user {user_id!r} has been deleted", code="user_deleted")
            for group in added:
                repo.add_member(group, user_id, now)
                session.audit.append(
                    self._event("group.member_added", principal, now, user_id, {"group": group})
                )
            for group in removed:
                repo.remove_member(group, user_id)
                session.audit.append(
                    self._event("group.member_removed", principal, now, user_id, {"group": group})
                )
            session.audit.append(
                self._event(
                    "user.updated",
                    principal,
                    now,
                    user_id,
                    {
                        "roles_before": list(user.roles),
                        "roles": list(roles),
                        "groups_added": list(added),
                        "groups_removed": list(removed),
                    },
                )
            )
            updated = repo.get_user(user_id) or replace(user, roles=roles, updated_at=now)
        return UserView(updated, groups)

    def suspend(self, principal: Principal, user_id: str) -> UserOutcome:
        authorize(principal, Permission.USER_WRITE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            user = self._existing(repo, user_id)
            if user.is_suspended:
                raise Conflict(f"user {user_id!r} is already suspended", code="user_suspended")
            if self._roles.holds_admin(user.roles, repo.groups_of(user_id)):
                self._guard_last_admin(repo, user_id, "suspend")
            if not repo.set_status(
                user_id, UserStatus.SUSPENDED, expected=UserStatus.ACTIVE, now=now
            ):
                raise Conflict(f"user {user_id!r} changed meanwhile; try again")
            revoked = tuple(repo.revoke_all_for(SubjectType.USER, user_id, now))
            session.audit.append(
                self._event(
                    "user.suspended", principal, now, user_id, {"revoked_tokens": list(revoked)}
                )
            )
        return UserOutcome(user_id, revoked, self._after_disable(user_id, "user suspended"))

    def activate(self, principal: Principal, user_id: str) -> UserView:
        authorize(principal, Permission.USER_WRITE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            user = self._existing(repo, user_id)
            if not user.is_suspended:
                raise Conflict(f"user {user_id!r} is not suspended", code="user_not_suspended")
            if not repo.set_status(
                user_id, UserStatus.ACTIVE, expected=UserStatus.SUSPENDED, now=now
            ):
                raise Conflict(f"user {user_id!r} changed meanwhile; try again")
            session.audit.append(self._event("user.activated", principal, now, user_id, {}))
            groups = tuple(repo.groups_of(user_id))
        return UserView(replace(user, status=UserStatus.ACTIVE, updated_at=now), groups)

    def delete(self, principal: Principal, user_id: str) -> UserOutcome:
        authorize(principal, Permission.USER_WRITE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            user = self._existing(repo, user_id)
            groups = tuple(repo.groups_of(user_id))
            if not user.is_suspended and self._roles.holds_admin(user.roles, groups):
                self._guard_last_admin(repo, user_id, "delete")
            if not repo.soft_delete(user_id, now):
                raise Gone(f"user {user_id!r} has been deleted", code="user_deleted")
            repo.remove_all_memberships(user_id)
            revoked = tuple(repo.revoke_all_for(SubjectType.USER, user_id, now))
            session.audit.append(
                self._event(
                    "user.deleted",
                    principal,
                    now,
                    user_id,
                    {"revoked_tokens": list(revoked), "groups_removed": list(groups)},
                )
            )
        return UserOutcome(user_id, revoked, self._after_disable(user_id, "user deleted"))

    def reissue_initial_token(self, principal: Principal, user_id: str) -> InitialToken:
        authorize(principal, Permission.TOKEN_REISSUE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            user = self._existing(repo, user_id)
            if user.is_suspended:
                raise Conflict(f"user {user_id!r} is suspended", code="user_suspended")
            groups = tuple(repo.groups_of(user_id))
            revoked = tuple(
                repo.revoke_all_for(
                    SubjectType.USER, user_id, now, provisioning_kind=ProvisioningKind.INITIAL
                )
            )
            raw, record = self._initial_token(user, groups, now)
            repo.add_token(record)
            session.audit.append(
                identity_event(
                    self._new_id,
                    now,
                    "token.reissued_initial",
                    principal,
                    ("token", record.id),
                    {
                        "issued_by": principal.subject_id,
                        "issued_for": user_id,
                        "revoked_tokens": list(revoked),
                        "scope_ceiling": list(record.scope_ceiling or ()),
                    },
                )
            )
        return InitialToken(UserView(user, groups), record, raw, revoked)

    # helpers

    def _initial_token(
        self, user: UserRecord, groups: Sequence[str], now: datetime
    ) -> tuple[str, TokenRecord]:
        try:
            resolved = self._roles.resolve_user(user, groups)
        except Forbidden:
            raise Validation(
                f"user {user.id!r} would hold no role: give it roles or groups, or set "
                "[auth] default_role",
                code="no_roles_resolved",
            ) from None
        return issue_token(
            random_bytes=self._random_bytes,
            new_id=self._new_id,
            subject_type=SubjectType.USER,
            subject_id=user.id,
            ceiling=role_names(resolved),
            name=INITIAL_TOKEN_NAME,
            kind=ProvisioningKind.INITIAL,
            expires_at=None,
            now=now,
        )

    def _check_roles(self, roles: Iterable[str]) -> None:
        unknown = [name for name in roles if not self._roles.is_role(name)]
        if unknown:
            raise Validation(f"unknown role(s): {', '.join(unknown)}")

    def _check_groups(self, groups: Iterable[str]) -> None:
        unknown = [name for name in groups if not self._roles.is_group(name)]
        if unknown:
            raise Validation(f"group(s) not defined in [[auth.groups]]: {', '.join(unknown)}")

    @staticmethod
    def _existing(repo: IdentityRepository, user_id: str) -> UserRecord:
        user = repo.get_user(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found", resource="user")
        if user.is_deleted:
            raise Gone(f"user {user_id!r} has been deleted", code="user_deleted")
        return user

    def _guard_last_admin(self, repo: IdentityRepository, user_id: str, action: str) -> None:
        memberships = repo.memberships()
        others = [
            user
            for user in repo.list_users()
            if user.id != user_id
            and not user.is_suspended
            and self._roles.holds_admin(user.roles, memberships.get(user.id, ()))
        ]
        if not others:
            raise Validation(
                f"cannot {action} the last active admin: make another user admin first",
                code="last_admin",
            )

    def _after_disable(self, user_id: str, reason: str) -> tuple[str, ...]:
        """Cancel what the disabled user asked for (the hook); the ids of those cancelled."""
        if self._on_user_disabled is None:
            return ()
        try:
            cancelled = self._on_user_disabled(user_id, reason)
        except Exception:  # the user is disabled either way; its requests can be cancelled later
            log.exception("cancelling the requests of disabled user %s failed", user_id)
            return ()
        return tuple(cancelled or ())

    def _event(
        self,
        event_type: str,
        principal: Principal,
        now: datetime,
        user_id: str,
        metadata: Mapping[str, Any],
    ) -> AuditEvent:
        return identity_event(self._new_id, now, event_type, principal, ("user", user_id), metadata)
