"""`IdentityRepository` over SQLAlchemy Core: users, group members and tokens (§4, §7.1).

Portable SQL only (SQLite and PostgreSQL): JSON as TEXT, timestamps as fixed-width TEXT
(`domain.shared.timestamps`), conditional updates whose rowcount decides races.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from adapters.store.schema import group_members, tokens, users
from application.server.ports.identity import (
    LifecycleState,
    TokenFilters,
    UserRecord,
    UserStatus,
)
from domain.server.api_tokens import ProvisioningKind, SubjectType, TokenRecord, TokenStatus
from domain.shared.timestamps import format_timestamp, parse_timestamp

#: `pg_advisory_xact_lock` key: the first 8 bytes of sha256("dbward.identity").
IDENTITY_LOCK_NAME = "dbward.identity"
IDENTITY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(IDENTITY_LOCK_NAME.encode()).digest()[:8], "big", signed=True
)

_BOOTSTRAP = ProvisioningKind.BOOTSTRAP.value

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _parse_ts(stored: str | None) -> datetime | None:
    return None if stored is None else parse_timestamp(stored)


def _roles_json(roles: Sequence[str]) -> str:
    return json.dumps(list(roles))


def _user(row: Row[Any]) -> UserRecord:
    m = row._mapping
    return UserRecord(
        id=m["id"],
        display_name=m["display_name"],
        email=m["email"],
        roles=tuple(json.loads(m["roles_json"] or "[]")),
        status=UserStatus(m["status"]),
        lifecycle_state=LifecycleState(m["lifecycle_state"]),
        created_at=parse_timestamp(m["created_at"]),
        updated_at=parse_timestamp(m["updated_at"]),
        last_seen_at=_parse_ts(m["last_seen_at"]),
    )


def _token(row: Row[Any]) -> TokenRecord:
    m = row._mapping
    ceiling = m["scope_ceiling_json"]
    kind = m["provisioning_kind"]
    return TokenRecord(
        id=m["id"],
        subject_type=SubjectType(m["subject_type"]),
        subject_id=m["subject_id"],
        token_hash=m["token_hash"],
        token_prefix=m["token_prefix"],
        scope_ceiling=None if ceiling is None else tuple(json.loads(ceiling)),
        name=m["name"],
        status=TokenStatus(m["status"]),
        provisioning_kind=None if kind is None else ProvisioningKind(kind),
        expires_at=_parse_ts(m["expires_at"]),
        created_at=parse_timestamp(m["created_at"]),
        revoked_at=_parse_ts(m["revoked_at"]),
    )


def _changes_identity(method: _Method) -> _Method:
    """Marks a write that can change what a token authenticates as (revoked, suspended,
    other roles or groups): `SqlStore` tells the authentication cache once it commits."""

    @functools.wraps(method)
    def marked(self: SqlIdentityRepository, *args: Any, **kwargs: Any) -> Any:
        self.changed = True
        return method(self, *args, **kwargs)

    return cast("_Method", marked)


class SqlIdentityRepository:
    """Runs in the caller's connection and transaction (one `StoreSession`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        #: Whether this transaction made a `_changes_identity` write.
        self.changed = False

    # --- users ------------------------------------------------------------------------

    def get_user(self, user_id: str) -> UserRecord | None:
        row = self._conn.execute(select(users).where(users.c.id == user_id)).first()
        return None if row is None else _user(row)

    @_changes_identity
    def add_user(self, user: UserRecord) -> bool:
        values = {
            "id": user.id,
            "display_name": user.display_name,
            "email": user.email,
            "roles_json": _roles_json(user.roles),
            "status": user.status.value,
            "lifecycle_state": user.lifecycle_state.value,
            "last_seen_at": _ts(user.last_seen_at),
            "created_at": format_timestamp(user.created_at),
            "updated_at": format_timestamp(user.updated_at),
        }
        # A savepoint keeps a duplicate from spoiling the caller's transaction (PostgreSQL
        # aborts the whole transaction on an error otherwise).
        try:
            with self._conn.begin_nested():
                self._conn.execute(insert(users).values(**values))
        except IntegrityError:
            return False
        return True

    def list_users(self, *, include_deleted: bool = False) -> list[UserRecord]:
        query = select(users).order_by(users.c.id)
        if not include_deleted:
            query = query.where(users.c.lifecycle_state == LifecycleState.ACTIVE.value)
        return [_user(row) for row in self._conn.execute(query)]

    @_changes_identity
    def set_roles(self, user_id: str, roles: Sequence[str], now: datetime) -> bool:
        result = self._conn.execute(
            update(users)
            .where(users.c.id == user_id, users.c.lifecycle_state == LifecycleState.ACTIVE.value)
            .values(roles_json=_roles_json(roles), updated_at=format_timestamp(now))
        )
        return result.rowcount == 1

    @_changes_identity
    def set_status(
        self, user_id: str, status: UserStatus, *, expected: UserStatus, now: datetime
    ) -> bool:
        result = self._conn.execute(
            update(users)
            .where(
                users.c.id == user_id,
                users.c.status == expected.value,
                users.c.lifecycle_state == LifecycleState.ACTIVE.value,
            )
            .values(status=status.value, updated_at=format_timestamp(now))
        )
        return result.rowcount == 1

    @_changes_identity
    def soft_delete(self, user_id: str, now: datetime) -> bool:
        result = self._conn.execute(
            update(users)
            .where(users.c.id == user_id, users.c.lifecycle_state == LifecycleState.ACTIVE.value)
            .values(lifecycle_state=LifecycleState.DELETED.value, updated_at=format_timestamp(now))
        )
        return result.rowcount == 1

    @_changes_identity
    def restore_user(self, user_id: str, now: datetime) -> bool:
        result = self._conn.execute(
            update(users)
            .where(
                users.c.id == user_id,
                or_(
                    users.c.status != UserStatus.ACTIVE.value,
                    users.c.lifecycle_state != LifecycleState.ACTIVE.value,
                ),
            )
            .values(
                status=UserStatus.ACTIVE.value,
                lifecycle_state=LifecycleState.ACTIVE.value,
                updated_at=format_timestamp(now),
            )
        )
        return result.rowcount == 1

    def touch_user(self, user_id: str, now: datetime) -> None:
        self._conn.execute(
            update(users).where(users.c.id == user_id).values(last_seen_at=format_timestamp(now))
        )

    # --- group memberships ----------------------------------------------------------------

    def groups_of(self, user_id: str) -> list[str]:
        query = (
            select(group_members.c.group_name)
            .where(group_members.c.user_id == user_id)
            .order_by(group_members.c.group_name)
        )
        return list(self._conn.scalars(query))

    def members_of(self, group: str) -> list[str]:
        query = (
            select(group_members.c.user_id)
            .where(group_members.c.group_name == group)
            .order_by(group_members.c.user_id)
        )
        return list(self._conn.scalars(query))

    def memberships(self) -> Mapping[str, Sequence[str]]:
        query = select(group_members.c.user_id, group_members.c.group_name).order_by(
            group_members.c.user_id, group_members.c.group_name
        )
        found: dict[str, list[str]] = {}
        for user_id, group in self._conn.execute(query):
            found.setdefault(user_id, []).append(group)
        return found

    @_changes_identity
    def add_member(self, group: str, user_id: str, now: datetime) -> bool:
        exists = self._conn.scalar(
            select(func.count())
            .select_from(group_members)
            .where(group_members.c.group_name == group, group_members.c.user_id == user_id)
        )
        if exists:
            return False
        try:
            with self._conn.begin_nested():
                self._conn.execute(
                    insert(group_members).values(
                        group_name=group, user_id=user_id, added_at=format_timestamp(now)
                    )
                )
        except IntegrityError:  # a concurrent add won
            return False
        return True

    @_changes_identity
    def remove_member(self, group: str, user_id: str) -> bool:
        result = self._conn.execute(
            delete(group_members).where(
                group_members.c.group_name == group, group_members.c.user_id == user_id
            )
        )
        return result.rowcount == 1

    @_changes_identity
    def remove_all_memberships(self, user_id: str) -> int:
        result = self._conn.execute(delete(group_members).where(group_members.c.user_id == user_id))
        return int(result.rowcount)

    # --- tokens -----------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        self._conn.execute(
            insert(tokens).values(
                id=token.id,
                subject_type=token.subject_type.value,
                subject_id=token.subject_id,
                token_hash=token.token_hash,
                token_prefix=token.token_prefix,
                scope_ceiling_json=(
                    None if token.scope_ceiling is None else json.dumps(list(token.scope_ceiling))
                ),
                name=token.name,
                status=token.status.value,
                provisioning_kind=(
                    None if token.provisioning_kind is None else token.provisioning_kind.value
                ),
                expires_at=_ts(token.expires_at),
                created_at=format_timestamp(token.created_at),
                revoked_at=_ts(token.revoked_at),
            )
        )

    def find_by_prefix(self, prefix: str) -> list[TokenRecord]:
        query = select(tokens).where(tokens.c.token_prefix == prefix)
        return [_token(row) for row in self._conn.execute(query)]

    def get_token(self, token_id: str) -> TokenRecord | None:
        row = self._conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
        return None if row is None else _token(row)

    def list_tokens(self, filters: TokenFilters) -> list[TokenRecord]:
        query = select(tokens)
        if filters.subject_id is not None:
            query = query.where(tokens.c.subject_id == filters.subject_id)
        if filters.subject_type is not None:
            query = query.where(tokens.c.subject_type == filters.subject_type.value)
        if filters.status is not None:
            query = query.where(tokens.c.status == filters.status.value)
        if not filters.include_bootstrap:
            query = query.where(
                or_(tokens.c.provisioning_kind.is_(None), tokens.c.provisioning_kind != _BOOTSTRAP)
            )
        query = query.order_by(tokens.c.created_at.desc(), tokens.c.id)
        if filters.limit is not None:
            query = query.limit(filters.limit)
        return [_token(row) for row in self._conn.execute(query)]

    @_changes_identity
    def revoke_token(self, token_id: str, now: datetime) -> bool:
        result = self._conn.execute(
            update(tokens)
            .where(tokens.c.id == token_id, tokens.c.status == TokenStatus.ACTIVE.value)
            .values(status=TokenStatus.REVOKED.value, revoked_at=format_timestamp(now))
        )
        return result.rowcount == 1

    @_changes_identity
    def revoke_all_for(
        self,
        subject_type: SubjectType,
        subject_id: str,
        now: datetime,
        *,
        provisioning_kind: str | None = None,
    ) -> list[str]:
        condition = and_(
            tokens.c.subject_type == subject_type.value,
            tokens.c.subject_id == subject_id,
            tokens.c.status == TokenStatus.ACTIVE.value,
        )
        if provisioning_kind is not None:
            condition = and_(condition, tokens.c.provisioning_kind == provisioning_kind)
        ids = list(self._conn.scalars(select(tokens.c.id).where(condition).order_by(tokens.c.id)))
        if not ids:
            return []
        self._conn.execute(
            update(tokens)
            .where(tokens.c.id.in_(ids), tokens.c.status == TokenStatus.ACTIVE.value)
            .values(status=TokenStatus.REVOKED.value, revoked_at=format_timestamp(now))
        )
        return ids

    def count_active(self, subject_type: SubjectType, subject_id: str, now: datetime) -> int:
        query = (
            select(func.count())
            .select_from(tokens)
            .where(
                tokens.c.subject_type == subject_type.value,
                tokens.c.subject_id == subject_id,
                tokens.c.status == TokenStatus.ACTIVE.value,
                or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > format_timestamp(now)),
                or_(tokens.c.provisioning_kind.is_(None), tokens.c.provisioning_kind != _BOOTSTRAP),
            )
        )
        return int(self._conn.scalar(query) or 0)

    def active_bootstrap_tokens(self) -> list[TokenRecord]:
        query = (
            select(tokens)
            .where(
                tokens.c.provisioning_kind == _BOOTSTRAP,
                tokens.c.status == TokenStatus.ACTIVE.value,
            )
            .order_by(tokens.c.created_at, tokens.c.id)
        )
        return [_token(row) for row in self._conn.execute(query)]

    def count_bootstrap_tokens(self) -> int:
        query = (
            select(func.count()).select_from(tokens).where(tokens.c.provisioning_kind == _BOOTSTRAP)
        )
        return int(self._conn.scalar(query) or 0)

    # --- housekeeping -----------------------------------------------------------------

    def serialize_identity_changes(self) -> None:
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(select(func.pg_advisory_xact_lock(IDENTITY_LOCK_KEY)))
        # SQLite: write transactions begin IMMEDIATE and already hold the only write lock.

    def ping(self) -> None:
        self._conn.execute(select(1)).scalar_one()
