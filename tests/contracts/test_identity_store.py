"""The identity store (identity and audit repositories, and the store's sessions): the
same behaviour from `tests.fakes.identity_store`, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete

from adapters.store.schema import (
    audit_events,
    audit_purge_checkpoints,
    group_members,
    tokens,
    users,
)
from adapters.store.sql_store import SqlSession, SqlStore
from application.server.ports.identity import (
    IdentityRepository,
    LifecycleState,
    TokenFilters,
    UserRecord,
    UserStatus,
)
from application.server.ports.store import AuditFilters, AuditRepository, Store, StoreSession
from domain.server.api_tokens import ProvisioningKind, SubjectType, TokenRecord, TokenStatus
from domain.server.audit import AuditEvent
from domain.server.audit_integrity import (
    SIGNED_CHECKPOINT_EVENT,
    ChainHead,
    ChainVerdict,
    CheckpointProgress,
    PurgeCheckpoint,
    verify_chain,
)
from domain.shared.timestamps import format_timestamp
from tests.fakes.identity_store import FakeSession, FakeStore, IdentityState

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_USER = SubjectType.USER
_AGENT = SubjectType.AGENT


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def session(connection: Connection | None) -> StoreSession:
    if connection is None:
        return FakeSession(IdentityState(), audit_fails=False)  # type: ignore[return-value]
    return SqlSession(connection)


@pytest.fixture
def identity(session: StoreSession) -> IdentityRepository:
    return session.identity


@pytest.fixture
def audit(session: StoreSession) -> AuditRepository:
    return session.audit


def a_user(user_id: str, **fields: Any) -> UserRecord:
    return UserRecord(
        id=user_id,
        roles=fields.pop("roles", ("requester",)),
        created_at=fields.pop("created_at", T0),
        updated_at=fields.pop("updated_at", T0),
        **fields,
    )


def a_token(token_id: str, subject_id: str = "alice", **fields: Any) -> TokenRecord:
    values: dict[str, Any] = {
        "id": token_id,
        "subject_type": _USER,
        "subject_id": subject_id,
        "token_hash": f"hash-{token_id}",
        "token_prefix": f"pre-{token_id}",
        "scope_ceiling": None,
        "name": None,
        "status": TokenStatus.ACTIVE,
        "provisioning_kind": None,
        "expires_at": None,
        "created_at": T0,
    }
    values.update(fields)
    return TokenRecord(**values)


def token_ids(found: list[TokenRecord]) -> list[str]:
    return [token.id for token in found]


# --- users ----------------------------------------------------------------------------------


def test_a_user_reads_back_field_for_field(identity: IdentityRepository) -> None:
    user = a_user(
        "alice",
        roles=("requester", "dba"),
        display_name="Alice",
        email="alice@example.com",
        status=UserStatus.SUSPENDED,
        lifecycle_state=LifecycleState.DELETED,
        last_seen_at=at(5),
        updated_at=at(3),
    )

    assert identity.add_user(user)

    assert identity.get_user("alice") == user
    assert identity.get_user("missing") is None


def test_a_taken_id_is_refused_even_by_a_deleted_user(identity: IdentityRepository) -> None:
    deleted = a_user("alice", lifecycle_state=LifecycleState.DELETED)
    identity.add_user(deleted)

    assert not identity.add_user(a_user("alice", display_name="Another Alice"))
    assert identity.get_user("alice") == deleted
    assert identity.add_user(a_user("bob"))  # the session goes on


def test_users_are_listed_by_id_without_the_deleted(identity: IdentityRepository) -> None:
    for user_id in ("carol", "alice", "bob"):
        identity.add_user(a_user(user_id))
    identity.soft_delete("bob", at(1))

    assert [u.id for u in identity.list_users()] == ["alice", "carol"]
    assert [u.id for u in identity.list_users(include_deleted=True)] == ["alice", "bob", "carol"]


def test_roles_change_only_for_a_user_that_is_not_deleted(identity: IdentityRepository) -> None:
    identity.add_user(a_user("alice"))
    identity.add_user(a_user("bob", lifecycle_state=LifecycleState.DELETED))

    assert identity.set_roles("alice", ["admin", "dba"], at(1))
    assert not identity.set_roles("bob", ["admin"], at(1))
    assert not identity.set_roles("missing", ["admin"], at(1))

    assert identity.get_user("alice") == a_user("alice", roles=("admin", "dba"), updated_at=at(1))
    assert identity.get_user("bob") == a_user("bob", lifecycle_state=LifecycleState.DELETED)


def test_a_status_change_needs_the_expected_status(identity: IdentityRepository) -> None:
    identity.add_user(a_user("alice"))
    identity.add_user(a_user("bob", lifecycle_state=LifecycleState.DELETED))

    def suspend(user_id: str) -> bool:
        return identity.set_status(
            user_id, UserStatus.SUSPENDED, expected=UserStatus.ACTIVE, now=at(1)
        )

    assert suspend("alice")
    assert not suspend("alice")  # a second racer finds it suspended already
    assert not suspend("bob")
    assert not suspend("missing")
    assert identity.get_user("alice") == a_user(
        "alice", status=UserStatus.SUSPENDED, updated_at=at(1)
    )


def test_a_user_is_deleted_once(identity: IdentityRepository) -> None:
    identity.add_user(a_user("alice"))

    assert identity.soft_delete("alice", at(1))
    assert not identity.soft_delete("alice", at(2))
    assert not identity.soft_delete("missing", at(1))

    assert identity.get_user("alice") == a_user(
        "alice", lifecycle_state=LifecycleState.DELETED, updated_at=at(1)
    )


def test_restoring_makes_a_suspended_or_deleted_user_active_again(
    identity: IdentityRepository,
) -> None:
    identity.add_user(a_user("suspended", status=UserStatus.SUSPENDED))
    identity.add_user(a_user("deleted", lifecycle_state=LifecycleState.DELETED))
    identity.add_user(a_user("active"))

    assert identity.restore_user("suspended", at(1))
    assert identity.restore_user("deleted", at(1))
    assert not identity.restore_user("active", at(1))
    assert not identity.restore_user("missing", at(1))

    assert identity.get_user("suspended") == a_user("suspended", updated_at=at(1))
    assert identity.get_user("deleted") == a_user("deleted", updated_at=at(1))
    assert identity.get_user("active") == a_user("active")


def test_touching_a_user_records_last_seen_only(identity: IdentityRepository) -> None:
    identity.add_user(a_user("alice"))

    identity.touch_user("alice", at(7))
    identity.touch_user("missing", at(7))

    assert identity.get_user("alice") == a_user("alice", last_seen_at=at(7))
    assert identity.get_user("missing") is None


# --- group memberships ----------------------------------------------------------------------


def test_memberships_are_sorted_every_way(identity: IdentityRepository) -> None:
    for user_id in ("alice", "bob", "carol"):
        identity.add_user(a_user(user_id))
    for group, user_id in (("ops", "bob"), ("dba", "bob"), ("ops", "alice"), ("sre", "bob")):
        assert identity.add_member(group, user_id, T0)

    assert identity.groups_of("bob") == ["dba", "ops", "sre"]
    assert identity.groups_of("carol") == []
    assert identity.members_of("ops") == ["alice", "bob"]
    assert identity.members_of("nobody") == []
    assert identity.memberships() == {"alice": ["ops"], "bob": ["dba", "ops", "sre"]}


def test_a_member_is_added_once(identity: IdentityRepository) -> None:
    identity.add_user(a_user("alice"))

    assert identity.add_member("ops", "alice", T0)
    assert not identity.add_member("ops", "alice", at(1))
    assert identity.members_of("ops") == ["alice"]


def test_only_a_stored_user_becomes_a_member(identity: IdentityRepository) -> None:
    assert not identity.add_member("ops", "missing", T0)

    assert identity.members_of("ops") == []
    identity.add_user(a_user("alice"))
    assert identity.add_member("ops", "alice", T0)  # the session goes on


def test_removing_members(identity: IdentityRepository) -> None:
    identity.add_user(a_user("alice"))
    identity.add_user(a_user("bob"))
    for group in ("dba", "ops", "sre"):
        identity.add_member(group, "alice", T0)
    identity.add_member("ops", "bob", T0)

    assert identity.remove_member("dba", "alice")
    assert not identity.remove_member("dba", "alice")
    assert identity.remove_all_memberships("alice") == 2
    assert identity.remove_all_memberships("alice") == 0

    assert identity.memberships() == {"bob": ["ops"]}


# --- tokens ---------------------------------------------------------------------------------


def test_a_token_reads_back_field_for_field(identity: IdentityRepository) -> None:
    plain = a_token("t1")
    full = a_token(
        "t2",
        subject_type=_AGENT,
        subject_id="agent-1",
        scope_ceiling=("agent-default",),
        name="deploy",
        status=TokenStatus.REVOKED,
        provisioning_kind=ProvisioningKind.INITIAL,
        expires_at=at(3600),
        created_at=at(1),
        revoked_at=at(2),
    )
    empty_ceiling = a_token("t3", scope_ceiling=())
    for token in (plain, full, empty_ceiling):
        identity.add_token(token)

    assert identity.get_token("t1") == plain
    assert identity.get_token("t2") == full
    assert identity.get_token("t3") == empty_ceiling
    assert identity.get_token("missing") is None


def test_a_prefix_finds_every_token_under_it_revoked_ones_too(
    identity: IdentityRepository,
) -> None:
    identity.add_token(a_token("t1", token_prefix="abcd1234"))
    identity.add_token(a_token("t2", token_prefix="abcd1234", status=TokenStatus.REVOKED))
    identity.add_token(a_token("t3", token_prefix="other000"))

    assert sorted(token_ids(identity.find_by_prefix("abcd1234"))) == ["t1", "t2"]
    assert identity.find_by_prefix("nothing0") == []


def test_tokens_are_listed_newest_first(identity: IdentityRepository) -> None:
    identity.add_token(a_token("t-old", created_at=at(1)))
    identity.add_token(a_token("t-new", created_at=at(3)))
    # Created at the same instant: the smaller id first.
    identity.add_token(a_token("t-mid-b", created_at=at(2)))
    identity.add_token(a_token("t-mid-a", created_at=at(2)))

    assert token_ids(identity.list_tokens(TokenFilters())) == [
        "t-new",
        "t-mid-a",
        "t-mid-b",
        "t-old",
    ]
    assert token_ids(identity.list_tokens(TokenFilters(limit=2))) == ["t-new", "t-mid-a"]


def test_token_listing_filters(identity: IdentityRepository) -> None:
    identity.add_token(a_token("alice-1", "alice", created_at=at(1)))
    identity.add_token(a_token("alice-2", "alice", created_at=at(2), status=TokenStatus.REVOKED))
    identity.add_token(a_token("agent-alice", "alice", subject_type=_AGENT, created_at=at(3)))
    identity.add_token(a_token("bob-1", "bob", created_at=at(4)))
    identity.add_token(
        a_token("boot", "admin", created_at=at(5), provisioning_kind=ProvisioningKind.BOOTSTRAP)
    )
    identity.add_token(
        a_token("initial", "bob", created_at=at(6), provisioning_kind=ProvisioningKind.INITIAL)
    )

    def listed(**filters: Any) -> list[str]:
        return token_ids(identity.list_tokens(TokenFilters(**filters)))

    assert listed() == ["initial", "bob-1", "agent-alice", "alice-2", "alice-1"]
    assert listed(include_bootstrap=True)[:2] == ["initial", "boot"]
    assert listed(subject_id="alice") == ["agent-alice", "alice-2", "alice-1"]
    assert listed(subject_id="alice", subject_type=_USER) == ["alice-2", "alice-1"]
    assert listed(status=TokenStatus.REVOKED) == ["alice-2"]
    assert listed(subject_type=_AGENT, limit=5) == ["agent-alice"]


def test_a_token_is_revoked_once(identity: IdentityRepository) -> None:
    token = a_token("t1")
    identity.add_token(token)

    assert identity.revoke_token("t1", at(1))
    assert not identity.revoke_token("t1", at(2))
    assert not identity.revoke_token("missing", at(1))

    assert identity.get_token("t1") == replace(token, status=TokenStatus.REVOKED, revoked_at=at(1))


def test_revoking_all_of_a_subjects_active_tokens(identity: IdentityRepository) -> None:
    identity.add_token(a_token("t2", "alice"))
    identity.add_token(a_token("t1", "alice", provisioning_kind=ProvisioningKind.INITIAL))
    identity.add_token(a_token("t0", "alice", status=TokenStatus.REVOKED))
    identity.add_token(a_token("agent", "alice", subject_type=_AGENT))
    identity.add_token(a_token("bob", "bob"))

    assert identity.revoke_all_for(
        _USER, "alice", at(1), provisioning_kind=ProvisioningKind.INITIAL.value
    ) == ["t1"]
    assert identity.revoke_all_for(_USER, "alice", at(2)) == ["t2"]
    assert identity.revoke_all_for(_USER, "alice", at(3)) == []

    revoked = identity.get_token("t2")
    assert revoked is not None and (revoked.status, revoked.revoked_at) == (
        TokenStatus.REVOKED,
        at(2),
    )
    still_active = [identity.get_token(t) for t in ("agent", "bob")]
    assert all(t is not None and t.is_active for t in still_active)


def test_active_tokens_are_counted_without_expired_or_bootstrap_ones(
    identity: IdentityRepository,
) -> None:
    identity.add_token(a_token("plain", "alice"))
    identity.add_token(a_token("expires-later", "alice", expires_at=at(11)))
    identity.add_token(a_token("expires-now", "alice", expires_at=at(10)))
    identity.add_token(a_token("revoked", "alice", status=TokenStatus.REVOKED))
    identity.add_token(a_token("boot", "alice", provisioning_kind=ProvisioningKind.BOOTSTRAP))
    identity.add_token(a_token("agent", "alice", subject_type=_AGENT))

    assert identity.count_active(_USER, "alice", at(10)) == 2
    assert identity.count_active(_AGENT, "alice", at(10)) == 1
    assert identity.count_active(_USER, "nobody", at(10)) == 0


def test_bootstrap_tokens(identity: IdentityRepository) -> None:
    boot = ProvisioningKind.BOOTSTRAP
    identity.add_token(a_token("agent-boot", "agent", provisioning_kind=boot, created_at=at(2)))
    identity.add_token(a_token("admin-boot-b", "admin", provisioning_kind=boot, created_at=at(1)))
    identity.add_token(a_token("admin-boot-a", "x", provisioning_kind=boot, created_at=at(1)))
    identity.add_token(a_token("old", "admin", provisioning_kind=boot, status=TokenStatus.REVOKED))
    identity.add_token(a_token("plain", "admin"))

    assert token_ids(identity.active_bootstrap_tokens()) == [
        "admin-boot-a",
        "admin-boot-b",
        "agent-boot",
    ]
    assert identity.count_bootstrap_tokens() == 4


def test_housekeeping_calls_answer(identity: IdentityRepository) -> None:
    identity.serialize_identity_changes()
    identity.ping()


# --- audit ----------------------------------------------------------------------------------


def an_event(n: int, **fields: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "id": f"ev-{n}",
        "event_type": "request.created",
        "event_category": "request",
        "outcome": "success",
        "actor_id": "alice",
        "actor_type": "user",
        "created_at": format_timestamp(at(n)),
    }
    values.update(fields)
    return AuditEvent(**values)


def _verify(audit: AuditRepository) -> ChainVerdict:
    return verify_chain(audit.chain(), purge_boundary=audit.purge_checkpoint_for)


def test_appended_events_form_one_chain(audit: AuditRepository) -> None:
    first = audit.append(an_event(1, reason="why", metadata_json='{"k":1}'))
    second = audit.append(an_event(2))

    assert first.prev_hash is None and len(first.event_hash) == 64
    assert second.prev_hash == first.event_hash
    assert _verify(audit) == ChainVerdict(total_events=2, first_broken_id=None)
    assert audit.list(AuditFilters(), limit=10, offset=0) == [second, first]


def test_an_empty_chain_verifies(audit: AuditRepository) -> None:
    assert _verify(audit) == ChainVerdict(total_events=0, first_broken_id=None)


def test_events_are_listed_newest_first_a_page_at_a_time(audit: AuditRepository) -> None:
    for n in range(5):
        audit.append(an_event(n))

    def page(limit: int, offset: int) -> list[str]:
        return [e.id for e in audit.list(AuditFilters(), limit=limit, offset=offset)]

    assert page(2, 0) == ["ev-4", "ev-3"]
    assert page(2, 3) == ["ev-1", "ev-0"]
    assert page(2, 5) == []


def test_events_are_listed_in_append_order_not_by_time(audit: AuditRepository) -> None:
    audit.append(an_event(1, created_at=format_timestamp(at(50))))
    audit.append(an_event(2, created_at=format_timestamp(at(10))))

    assert [e.id for e in audit.list(AuditFilters(), limit=10, offset=0)] == ["ev-2", "ev-1"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (AuditFilters(actor_id="bob"), ["ev-2"]),
        (AuditFilters(event_type="token.created"), ["ev-3"]),
        (AuditFilters(event_category="auth"), ["ev-3"]),
        (AuditFilters(outcome="denied"), ["ev-2"]),
        (AuditFilters(database="orders"), ["ev-2", "ev-1"]),
        (AuditFilters(environment="prod"), ["ev-1"]),
        (AuditFilters(request_id="r1"), ["ev-1"]),
        (AuditFilters(operation="execute_dml"), ["ev-2"]),
        (AuditFilters(since=at(2)), ["ev-3", "ev-2"]),
        (AuditFilters(until=at(2)), ["ev-2", "ev-1"]),
        (AuditFilters(since=at(2), until=at(2)), ["ev-2"]),
        (AuditFilters(actor_id="alice", database="orders"), ["ev-1"]),
    ],
)
def test_every_audit_filter(
    audit: AuditRepository, filters: AuditFilters, expected: list[str]
) -> None:
    audit.append(
        an_event(
            1,
            database_name="orders",
            environment="prod",
            request_id="r1",
            operation="execute_select",
        )
    )
    audit.append(
        an_event(
            2,
            actor_id="bob",
            outcome="denied",
            database_name="orders",
            environment="staging",
            operation="execute_dml",
        )
    )
    audit.append(an_event(3, event_type="token.created", event_category="auth"))

    assert [e.id for e in audit.list(filters, limit=10, offset=0)] == expected


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (10, -1)])
def test_a_listing_needs_a_positive_limit_and_no_negative_offset(
    audit: AuditRepository, limit: int, offset: int
) -> None:
    with pytest.raises(ValueError, match="limit"):
        audit.list(AuditFilters(), limit=limit, offset=offset)


def a_checkpoint(n: int) -> AuditEvent:
    return an_event(n, event_type=SIGNED_CHECKPOINT_EVENT, event_category="policy")


def a_purge(last: AuditEvent, through: int, count: int) -> PurgeCheckpoint:
    return PurgeCheckpoint(
        id=f"purge-{through}",
        last_purged_event_id=last.id,
        last_purged_hash=last.event_hash,
        purged_through_position=through,
        purged_count=count,
        purged_before=format_timestamp(at(100)),
        key_id="ed25519:0123456789abcdef",
        signature=bytes(range(64)),
        created_at=format_timestamp(at(200)),
    )


def test_the_head_and_positions(audit: AuditRepository) -> None:
    assert audit.head() is None
    audit.append(an_event(1))
    second = audit.append(an_event(2))
    assert audit.head() == ChainHead(second.id, second.event_hash, 2, second.created_at)
    assert [e.id for e in audit.chain()] == ["ev-1", "ev-2"]


def test_checkpoint_progress_counts_events_since_the_newest_checkpoint(
    audit: AuditRepository,
) -> None:
    assert audit.checkpoint_progress() == CheckpointProgress(0, None)
    audit.append(an_event(1))
    assert audit.checkpoint_progress() == CheckpointProgress(1, None)
    checkpoint = audit.append(a_checkpoint(2))
    assert audit.checkpoint_progress() == CheckpointProgress(0, checkpoint.created_at)
    audit.append(an_event(3))
    audit.append(an_event(4))
    assert audit.checkpoint_progress() == CheckpointProgress(2, checkpoint.created_at)


def test_the_newest_checkpoint_before_a_cutoff(audit: AuditRepository) -> None:
    audit.append(an_event(1))
    early = audit.append(a_checkpoint(10))
    audit.append(an_event(20))
    audit.append(a_checkpoint(30))
    assert audit.newest_checkpoint_before(at(5)) is None
    assert audit.newest_checkpoint_before(at(10)) == ChainHead(
        early.id, early.event_hash, 2, early.created_at
    )
    found = audit.newest_checkpoint_before(at(29))
    assert found is not None and found.event_id == early.id


def test_a_purge_removes_the_prefix_and_positions_keep_counting(audit: AuditRepository) -> None:
    audit.append(an_event(1))
    boundary = audit.append(a_checkpoint(2))
    kept = audit.append(an_event(3))
    assert audit.purge_through("no-such-event") == 0
    assert audit.purge_through(boundary.id) == 2
    purge = a_purge(boundary, through=2, count=2)
    audit.add_purge_checkpoint(purge)

    assert [e.id for e in audit.chain()] == [kept.id]
    assert audit.purge_checkpoint_for(boundary.event_hash) == purge
    assert audit.purge_checkpoint_for(kept.event_hash) is None
    assert audit.head() == ChainHead(kept.id, kept.event_hash, 3, kept.created_at)
    assert audit.checkpoint_progress() == CheckpointProgress(1, None)
    assert _verify(audit).valid


def test_an_emptied_chain_continues_after_its_purge_boundary(audit: AuditRepository) -> None:
    boundary = audit.append(a_checkpoint(1))
    assert audit.purge_through(boundary.id) == 1
    audit.add_purge_checkpoint(a_purge(boundary, through=1, count=1))
    assert audit.head() is None
    after = audit.append(an_event(2))
    assert after.prev_hash == boundary.event_hash
    head = audit.head()
    assert head is not None and head.position == 2


# --- sessions -------------------------------------------------------------------------------


@pytest.fixture
def store(store_engine: Engine | None) -> Iterator[Store]:
    """A whole store: these tests commit, so the SQL tables are emptied afterwards."""
    if store_engine is None:
        yield FakeStore()  # type: ignore[misc]
        return
    yield SqlStore(store_engine)
    with store_engine.begin() as conn:
        for table in (group_members, tokens, users, audit_events, audit_purge_checkpoints):
            conn.execute(delete(table))


def test_a_write_commits_when_its_block_ends(store: Store) -> None:
    with store.write() as session:
        session.identity.add_user(a_user("alice"))
        session.audit.append(an_event(1))

    with store.read() as session:
        assert session.identity.get_user("alice") == a_user("alice")
        assert _verify(session.audit).total_events == 1


def test_a_write_that_raises_leaves_nothing_behind(store: Store) -> None:
    with store.write() as session:
        session.identity.add_user(a_user("alice"))
        session.identity.add_token(a_token("t0", "alice"))

    with pytest.raises(RuntimeError, match="use case failed"), store.write() as session:
        session.identity.add_user(a_user("bob"))
        session.identity.add_member("ops", "alice", T0)
        session.identity.revoke_token("t0", at(1))
        session.identity.add_token(a_token("t1", "bob"))
        session.audit.append(an_event(1))
        raise RuntimeError("use case failed")

    with store.read() as session:
        assert [u.id for u in session.identity.list_users()] == ["alice"]
        assert session.identity.memberships() == {}
        token = session.identity.get_token("t0")
        assert token is not None and token.is_active
        assert session.identity.get_token("t1") is None
        assert _verify(session.audit).total_events == 0


def test_a_read_session_appends_no_audit_event(store: Store) -> None:
    with pytest.raises(RuntimeError), store.read() as session:
        session.audit.append(an_event(1))

    with store.read() as session:
        assert _verify(session.audit).total_events == 0
