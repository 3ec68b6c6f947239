"""The identity ports: the repository of users, group memberships and API tokens
(docs/server.md §4), and the secret files the bootstrap tokens are written to.

The repository is part of a `StoreSession` (`application.server.ports.store`): every
method runs inside the session's transaction, and writes commit together with the audit
event the use case appends in the same session. Changes that race are conditional
(`... WHERE status = ...`) and report whether they happened (`bool` or a count), so the
use case never has to read first to decide a race.

Groups themselves live in the config (`[[auth.groups]]`); the store keeps only who is a
member of which group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from domain.server.api_tokens import SubjectType, TokenRecord, TokenStatus

__all__ = [
    "IdentityRepository",
    "LifecycleState",
    "SecretFiles",
    "TokenFilters",
    "UserRecord",
    "UserStatus",
]


class UserStatus(StrEnum):
    """Whether a user may authenticate: a suspended user's tokens are refused (and revoked)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class LifecycleState(StrEnum):
    """Users are never removed, only marked deleted: audit rows keep naming them."""

    ACTIVE = "active"
    DELETED = "deleted"


@dataclass(frozen=True)
class UserRecord:
    """One row of `users`. `roles` are the direct roles (groups add more)."""

    id: str
    roles: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    display_name: str | None = None
    email: str | None = None
    status: UserStatus = UserStatus.ACTIVE
    lifecycle_state: LifecycleState = LifecycleState.ACTIVE
    last_seen_at: datetime | None = None

    @property
    def is_deleted(self) -> bool:
        return self.lifecycle_state is LifecycleState.DELETED

    @property
    def is_suspended(self) -> bool:
        return self.status is UserStatus.SUSPENDED

    @property
    def can_authenticate(self) -> bool:
        return not self.is_deleted and not self.is_suspended


@dataclass(frozen=True)
class TokenFilters:
    """`GET /api/tokens` filters; every given field must match."""

    subject_id: str | None = None
    subject_type: SubjectType | None = None
    status: TokenStatus | None = None
    #: Bootstrap tokens are hidden from listings (docs/server.md §4.5).
    include_bootstrap: bool = False
    limit: int | None = None


class IdentityRepository(Protocol):
    # --- users ------------------------------------------------------------------------

    def get_user(self, user_id: str) -> UserRecord | None:
        """The user, deleted or not; None when no row exists."""
        ...

    def add_user(self, user: UserRecord) -> bool:
        """Insert `user`; False (nothing written) when the id is taken, even by a deleted user."""
        ...

    def list_users(self, *, include_deleted: bool = False) -> list[UserRecord]:
        """Users ordered by id."""
        ...

    def set_roles(self, user_id: str, roles: Sequence[str], now: datetime) -> bool:
        """Replace the direct roles of a user that is not deleted."""
        ...

    def set_status(
        self, user_id: str, status: UserStatus, *, expected: UserStatus, now: datetime
    ) -> bool:
        """`status` only if the user is not deleted and currently has the `expected` status."""
        ...

    def soft_delete(self, user_id: str, now: datetime) -> bool:
        """Mark the user deleted, if it is not already."""
        ...

    def restore_user(self, user_id: str, now: datetime) -> bool:
        """Active again and not deleted (the forced bootstrap's recovery of `admin`)."""
        ...

    def touch_user(self, user_id: str, now: datetime) -> None:
        """Record `now` as the user's `last_seen_at`."""
        ...

    # --- group memberships ----------------------------------------------------------------

    def groups_of(self, user_id: str) -> list[str]:
        """The groups the user is a member of, sorted."""
        ...

    def members_of(self, group: str) -> list[str]:
        """The user ids in `group`, sorted."""
        ...

    def memberships(self) -> Mapping[str, Sequence[str]]:
        """Every membership, as user id → sorted groups (users without groups are absent)."""
        ...

    def add_member(self, group: str, user_id: str, now: datetime) -> bool:
        """False when the user already was a member."""
        ...

    def remove_member(self, group: str, user_id: str) -> bool:
        """False when the user was not a member."""
        ...

    def remove_all_memberships(self, user_id: str) -> int: ...

    # --- tokens -----------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None: ...

    def find_by_prefix(self, prefix: str) -> list[TokenRecord]:
        """Every token stored under a lookup prefix, revoked ones included.

        Revoked rows are returned so that presenting a revoked token is answered
        `token_revoked` rather than a generic failure; the caller still compares the hash
        of each candidate in constant time (`domain.server.api_tokens.authenticate`).
        """
        ...

    def get_token(self, token_id: str) -> TokenRecord | None: ...

    def list_tokens(self, filters: TokenFilters) -> list[TokenRecord]:
        """Matching tokens, newest first."""
        ...

    def revoke_token(self, token_id: str, now: datetime) -> bool:
        """Revoke the token if it is active; False when it is unknown or already revoked."""
        ...

    def revoke_all_for(
        self,
        subject_type: SubjectType,
        subject_id: str,
        now: datetime,
        *,
        provisioning_kind: str | None = None,
    ) -> list[str]:
        """Revoke the subject's active tokens (only those of one provisioning kind, if
        given); the ids of the tokens revoked."""
        ...

    def count_active(self, subject_type: SubjectType, subject_id: str, now: datetime) -> int:
        """Tokens of the subject that are neither revoked nor expired at `now`.

        Bootstrap tokens are not counted: they are hidden from listings, so counting them
        against `max_active_tokens_per_user` would refuse a token for no visible reason.
        """
        ...

    def active_bootstrap_tokens(self) -> list[TokenRecord]: ...

    def count_bootstrap_tokens(self) -> int:
        """Bootstrap tokens ever issued and still stored, revoked ones included."""
        ...

    # --- housekeeping -----------------------------------------------------------------

    def serialize_identity_changes(self) -> None:
        """Hold the identity write lock until the transaction ends.

        For changes that check a global invariant before writing (the last active admin,
        a first-start bootstrap), so that two server replicas cannot both pass the check.
        """
        ...

    def ping(self) -> None:
        """A trivial query: raises when the store cannot answer (readiness)."""
        ...


class SecretFiles(Protocol):
    """Small secret files in the state dir: the bootstrap tokens, shown once as files."""

    def write_secret(self, path: Path, text: str) -> None:
        """Replace `path` atomically with `text`, readable by the owner only (0600)."""
        ...

    def read_secret(self, path: Path) -> str | None:
        """The file's text, or None when it does not exist."""
        ...
