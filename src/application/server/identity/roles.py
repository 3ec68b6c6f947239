"""The role catalog (built-in roles + `[[auth.roles]]`) and the `[[auth.groups]]` map.

Every use case that resolves a subject's roles asks the one `RoleDirectory` built from the
config, so authentication, token issuing and user administration agree on what a role
name and a group mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from application.server.ports.identity import LifecycleState, UserRecord
from application.server.settings import AuthSettings
from domain.server.api_tokens import SubjectType
from domain.server.rbac import ADMIN, Role, define_role, resolve_roles, role_catalog

__all__ = ["RoleDirectory", "role_names", "unique_names"]


class RoleDirectory:
    """The role catalog (built-in + `[[auth.roles]]`) and the `[[auth.groups]]` → roles map."""

    def __init__(self, auth: AuthSettings) -> None:
        self.catalog: Mapping[str, Role] = role_catalog(
            define_role(r.name, r.permissions, r.databases, r.environments) for r in auth.roles
        )
        self.group_roles: Mapping[str, tuple[str, ...]] = {g.name: g.roles for g in auth.groups}
        self.default_role = auth.default_role

    def is_role(self, name: str) -> bool:
        return name in self.catalog

    def is_group(self, name: str) -> bool:
        return name in self.group_roles

    def roles_of_groups(self, groups: Iterable[str]) -> tuple[str, ...]:
        names: dict[str, None] = {}
        for group in groups:
            for role in self.group_roles.get(group, ()):
                names[role] = None
        return tuple(names)

    def resolve(
        self, subject_type: SubjectType, direct_roles: Iterable[str], groups: Iterable[str]
    ) -> tuple[Role, ...]:
        """§4.3 steps 1-4; raises Forbidden `no_roles_resolved`."""
        return resolve_roles(
            subject_type,
            direct_roles,
            self.roles_of_groups(groups),
            self.default_role,
            self.catalog,
        )

    def resolve_user(self, user: UserRecord, groups: Iterable[str]) -> tuple[Role, ...]:
        """A user's roles: direct roles count only while the user is active (§4.3)."""
        direct = user.roles if user.lifecycle_state is LifecycleState.ACTIVE else ()
        return self.resolve(SubjectType.USER, direct, groups)

    def holds_admin(self, roles: Iterable[str], groups: Iterable[str]) -> bool:
        return ADMIN in set(roles) or ADMIN in self.roles_of_groups(groups)


def role_names(roles: Iterable[Role]) -> tuple[str, ...]:
    return tuple(role.name for role in roles)


def unique_names(names: Iterable[str]) -> tuple[str, ...]:
    """`names` without repeats, in first-seen order (role and group lists from a caller)."""
    return tuple(dict.fromkeys(names))
