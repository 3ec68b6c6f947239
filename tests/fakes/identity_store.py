"""An in-memory `Store` for the identity use cases: identity and audit repositories.

A write session works on the live state and restores a snapshot when the block raises, so
a failed use case leaves nothing behind, like a rolled-back transaction. `work` is absent:
the identity use cases never touch it. `tests/contracts/test_identity_store.py` runs the
same behaviour tests on this fake and on the SQL store, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from application.server.ports.identity import (
    LifecycleState,
    TokenFilters,
    UserRecord,
    UserStatus,
)
from application.server.ports.store import AuditFilters
from domain.server.api_tokens import ProvisioningKind, SubjectType, TokenRecord, TokenStatus
from domain.server.audit import AuditEvent, chain
from domain.server.audit_integrity import (
    SIGNED_CHECKPOINT_EVENT,
    ChainHead,
    CheckpointProgress,
    PurgeCheckpoint,
)
from domain.shared.timestamps import format_timestamp


@dataclass
class IdentityState:
    users: dict[str, UserRecord] = field(default_factory=dict)
    members: set[tuple[str, str]] = field(default_factory=set)  # (group, user)
    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    events: list[AuditEvent] = field(default_factory=list)
    purge_checkpoints: list[PurgeCheckpoint] = field(default_factory=list)
    #: Server secrets, sealed: name -> bytes.
    secrets: dict[str, bytes] = field(default_factory=dict)


class FakeSecretRepository:
    """`SecretRepository` over `IdentityState.secrets`."""

    def __init__(self, state: IdentityState) -> None:
        self.state = state

    def get(self, name: str) -> bytes | None:
        return self.state.secrets.get(name)

    def add_if_absent(self, name: str, sealed: bytes, now: datetime) -> bool:
        if name in self.state.secrets:
            return False
        self.state.secrets[name] = sealed
        return True

    def put(self, name: str, sealed: bytes, now: datetime) -> None:
        self.state.secrets[name] = sealed


class FakeIdentityRepository:
    def __init__(self, state: IdentityState) -> None:
        self.state = state

    # users
    def get_user(self, user_id: str) -> UserRecord | None:
        return self.state.users.get(user_id)

    def add_user(self, user: UserRecord) -> bool:
        if user.id in self.state.users:
            return False
        self.state.users[user.id] = user
        return True

    def list_users(self, *, include_deleted: bool = False) -> list[UserRecord]:
        return [
            user
            for _, user in sorted(self.state.users.items())
            if include_deleted or not user.is_deleted
        ]

    def _change(self, user_id: str, when: bool, **values: object) -> bool:
        user = self.state.users.get(user_id)
        if user is None or not when:
            return False
        self.state.users[user_id] = replace(user, **values)  # type: ignore[arg-type]
        return True

    def set_roles(self, user_id: str, roles: Sequence[str], now: datetime) -> bool:
        user = self.state.users.get(user_id)
        return self._change(
            user_id,
            user is not None and not user.is_deleted,
            roles=tuple(roles),
            updated_at=now,
        )

    def set_status(
        self, user_id: str, status: UserStatus, *, expected: UserStatus, now: datetime
    ) -> bool:
        user = self.state.users.get(user_id)
        ok = user is not None and not user.is_deleted and user.status is expected
        return self._change(user_id, ok, status=status, updated_at=now)

    def soft_delete(self, user_id: str, now: datetime) -> bool:
        user = self.state.users.get(user_id)
        ok = user is not None and not user.is_deleted
        return self._change(user_id, ok, lifecycle_state=LifecycleState.DELETED, updated_at=now)

    def restore_user(self, user_id: str, now: datetime) -> bool:
        user = self.state.users.get(user_id)
        ok = user is not None and not user.can_authenticate
        return self._change(
            user_id,
            ok,
            status=UserStatus.ACTIVE,
            lifecycle_state=LifecycleState.ACTIVE,
            updated_at=now,
        )

    def touch_user(self, user_id: str, now: datetime) -> None:
        self._change(user_id, True, last_seen_at=now)

    # groups
    def groups_of(self, user_id: str) -> list[str]:
        return sorted(group for group, user in self.state.members if user == user_id)

    def members_of(self, group: str) -> list[str]:
        return sorted(user for g, user in self.state.members if g == group)

    def memberships(self) -> Mapping[str, Sequence[str]]:
        found: dict[str, list[str]] = {}
        for group, user in sorted(self.state.members, key=lambda m: (m[1], m[0])):
            found.setdefault(user, []).append(group)
        return found

    def add_member(self, group: str, user_id: str, now: datetime) -> bool:
        if user_id not in self.state.users or (group, user_id) in self.state.members:
            return False
        self.state.members.add((group, user_id))
        return True

    def remove_member(self, group: str, user_id: str) -> bool:
        if (group, user_id) not in self.state.members:
            return False
        self.state.members.discard((group, user_id))
        return True

    def remove_all_memberships(self, user_id: str) -> int:
        mine = {m for m in self.state.members if m[1] == user_id}
        self.state.members -= mine
        return len(mine)

    # tokens
    def add_token(self, token: TokenRecord) -> None:
        assert token.id not in self.state.tokens
        assert all(t.token_hash != token.token_hash for t in self.state.tokens.values())
        if token.provisioning_kind is ProvisioningKind.INITIAL and token.is_active:
            assert not any(
                t.provisioning_kind is ProvisioningKind.INITIAL
                and t.is_active
                and (t.subject_type, t.subject_id) == (token.subject_type, token.subject_id)
                for t in self.state.tokens.values()
            ), "UNIQUE active initial token per subject"
        self.state.tokens[token.id] = token

    def find_by_prefix(self, prefix: str) -> list[TokenRecord]:
        return [t for t in self.state.tokens.values() if t.token_prefix == prefix]

    def get_token(self, token_id: str) -> TokenRecord | None:
        return self.state.tokens.get(token_id)

    def list_tokens(self, filters: TokenFilters) -> list[TokenRecord]:
        found = [
            t
            for t in self.state.tokens.values()
            if (filters.subject_id is None or t.subject_id == filters.subject_id)
            and (filters.subject_type is None or t.subject_type is filters.subject_type)
            and (filters.status is None or t.status is filters.status)
            and (filters.include_bootstrap or not t.is_bootstrap)
        ]
        found.sort(key=lambda t: t.id)
        found.sort(key=lambda t: t.created_at, reverse=True)  # newest first, ties by id
        return found[: filters.limit] if filters.limit is not None else found

    def revoke_token(self, token_id: str, now: datetime) -> bool:
        token = self.state.tokens.get(token_id)
        if token is None or not token.is_active:
            return False
        self.state.tokens[token_id] = replace(token, status=TokenStatus.REVOKED, revoked_at=now)
        return True

    def revoke_all_for(
        self,
        subject_type: SubjectType,
        subject_id: str,
        now: datetime,
        *,
        provisioning_kind: str | None = None,
    ) -> list[str]:
        ids = sorted(
            t.id
            for t in self.state.tokens.values()
            if t.subject_type is subject_type
            and t.subject_id == subject_id
            and t.is_active
            and (provisioning_kind is None or t.provisioning_kind == provisioning_kind)
        )
        for token_id in ids:
            self.revoke_token(token_id, now)
        return ids

    def count_active(self, subject_type: SubjectType, subject_id: str, now: datetime) -> int:
        return sum(
            1
            for t in self.state.tokens.values()
            if t.subject_type is subject_type
            and t.subject_id == subject_id
            and t.is_active
            and not t.is_expired(now)
            and not t.is_bootstrap
        )

    def active_bootstrap_tokens(self) -> list[TokenRecord]:
        found = [t for t in self.state.tokens.values() if t.is_bootstrap and t.is_active]
        return sorted(found, key=lambda t: (t.created_at, t.id))

    def count_bootstrap_tokens(self) -> int:
        return sum(1 for t in self.state.tokens.values() if t.is_bootstrap)

    def serialize_identity_changes(self) -> None:
        pass

    def ping(self) -> None:
        pass


class FakeAuditRepository:
    def __init__(
        self, state: IdentityState, *, fail: bool = False, read_only: bool = False
    ) -> None:
        self.state = state
        self.fail = fail
        self.read_only = read_only

    def append(self, event: AuditEvent) -> AuditEvent:
        if self.read_only:
            raise RuntimeError("append needs a write session, not a read one")
        if self.fail:
            raise RuntimeError("audit store is down")
        head = self.state.events[-1].event_hash if self.state.events else None
        if head is None and self.state.purge_checkpoints:
            head = self._newest_purge().last_purged_hash
        linked = chain(event, head)
        self.state.events.append(linked)
        return linked

    def list(self, filters: AuditFilters, *, limit: int, offset: int) -> list[AuditEvent]:
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0 (got {limit}, {offset})")

        def keep(e: AuditEvent) -> bool:
            pairs = (
                (filters.actor_id, e.actor_id),
                (filters.event_type, e.event_type),
                (filters.event_category, e.event_category),
                (filters.outcome, e.outcome),
                (filters.database, e.database_name),
                (filters.environment, e.environment),
                (filters.request_id, e.request_id),
                (filters.operation, e.operation),
            )
            if any(wanted is not None and wanted != got for wanted, got in pairs):
                return False
            if filters.since and e.created_at < format_timestamp(filters.since):
                return False
            return not (filters.until and e.created_at > format_timestamp(filters.until))

        newest_first = [e for e in reversed(self.state.events) if keep(e)]
        return newest_first[offset : offset + limit]

    def chain(self) -> Iterator[AuditEvent]:
        return iter(list(self.state.events))

    def head(self) -> ChainHead | None:
        if not self.state.events:
            return None
        last = self.state.events[-1]
        position = self._base() + len(self.state.events)
        return ChainHead(last.id, last.event_hash, position, last.created_at)

    def last_sequence(self) -> int:
        return self._base() + len(self.state.events)

    def checkpoint_progress(self) -> CheckpointProgress:
        events = self.state.events
        for index in range(len(events) - 1, -1, -1):
            if events[index].event_type == SIGNED_CHECKPOINT_EVENT:
                return CheckpointProgress(len(events) - index - 1, events[index].created_at)
        return CheckpointProgress(len(events), None)

    def newest_checkpoint_before(self, cutoff: datetime) -> ChainHead | None:
        events = self.state.events
        for index in range(len(events) - 1, -1, -1):
            event = events[index]
            if event.event_type == SIGNED_CHECKPOINT_EVENT and event.created_at <= (
                format_timestamp(cutoff)
            ):
                position = self._base() + index + 1
                return ChainHead(event.id, event.event_hash, position, event.created_at)
        return None

    def purge_through(self, event_id: str) -> int:
        ids = [e.id for e in self.state.events]
        if event_id not in ids:
            return 0
        count = ids.index(event_id) + 1
        del self.state.events[:count]
        return count

    def add_purge_checkpoint(self, checkpoint: PurgeCheckpoint) -> None:
        if any(
            c.last_purged_hash == checkpoint.last_purged_hash for c in self.state.purge_checkpoints
        ):
            raise ValueError("duplicate purge checkpoint")
        self.state.purge_checkpoints.append(checkpoint)

    def purge_checkpoint_for(self, last_purged_hash: str) -> PurgeCheckpoint | None:
        for checkpoint in self.state.purge_checkpoints:
            if checkpoint.last_purged_hash == last_purged_hash:
                return checkpoint
        return None

    def _newest_purge(self) -> PurgeCheckpoint:
        return max(self.state.purge_checkpoints, key=lambda c: c.purged_through_position)

    def _base(self) -> int:
        return self._newest_purge().purged_through_position if self.state.purge_checkpoints else 0


class FakeSession:
    def __init__(self, state: IdentityState, *, audit_fails: bool, read_only: bool = False) -> None:
        self.identity = FakeIdentityRepository(state)
        self.audit = FakeAuditRepository(state, fail=audit_fails, read_only=read_only)
        self.secrets = FakeSecretRepository(state)
        self.work = None


class FakeStore:
    """`Store` in memory. `audit_fails` makes every audit append raise."""

    def __init__(self) -> None:
        self.state = IdentityState()
        self.audit_fails = False
        self.writes = 0
        self.rollbacks = 0

    @contextmanager
    def write(self) -> Iterator[FakeSession]:
        snapshot = copy.deepcopy(self.state)
        try:
            yield FakeSession(self.state, audit_fails=self.audit_fails)
        except BaseException:
            self.state.users = snapshot.users
            self.state.members = snapshot.members
            self.state.tokens = snapshot.tokens
            self.state.events = snapshot.events
            self.state.purge_checkpoints = snapshot.purge_checkpoints
            self.state.secrets = snapshot.secrets
            self.rollbacks += 1
            raise
        self.writes += 1

    @contextmanager
    def read(self) -> Iterator[FakeSession]:
        yield FakeSession(self.state, audit_fails=self.audit_fails, read_only=True)

    # test helpers
    def events(self, event_type: str | None = None) -> list[AuditEvent]:
        return [e for e in self.state.events if event_type is None or e.event_type == event_type]


class MemorySecretFiles:
    """`SecretFiles` in a dict; `fail_on` names a file whose write raises."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.fail_on: str | None = None

    def write_secret(self, path: object, text: str) -> None:
        if self.fail_on is not None and str(path).endswith(self.fail_on):
            raise OSError(f"cannot write {path}")
        self.files[str(path)] = text

    def read_secret(self, path: object) -> str | None:
        return self.files.get(str(path))
