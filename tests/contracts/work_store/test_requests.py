"""`RequestRepository`: the same behaviour from the fake, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from application.server.ports.work import WorkRepository
from application.server.ports.work.requests import (
    DuplicateIdempotencyKey,
    RequestFilters,
    RequestRecord,
    RequestUpdate,
)
from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation
from domain.shared.scopes import Scope
from tests.contracts.work_store.records import BILLING, PROD, STAGING, add_request, at

_S = RequestStatus


def ids(records: list[RequestRecord]) -> list[str]:
    return [record.id for record in records]


# --- insert and lookups ---------------------------------------------------------------------


def test_a_request_reads_back_field_for_field(work: WorkRepository) -> None:
    record = add_request(
        work,
        "r1",
        status=_S.DISPATCHED,
        pre_dispatch_status=_S.APPROVED,
        emergency=True,
        reason="incident 42",
        idempotency_key="key-1",
        idempotency_fingerprint="ab" * 32,
        metadata_json='{"ticket":"OPS-1"}',
        share_with=("bob", "role:dba"),
        no_store=True,
        workflow_snapshot_json='{"steps":[]}',
        decision_trace_json='["auto"]',
        execution_plan_json='["SELECT 1"]',
        cancelled_by="carol",
        cancel_reason="wrong database",
        audit_incomplete=True,
        resolved_at=at(5),
        expires_at=at(3600),
    )

    assert work.get_request("r1") == record
    assert work.get_request("missing") is None


def test_defaults_read_back_as_defaults(work: WorkRepository) -> None:
    record = add_request(work, "r1")

    assert work.get_request("r1") == record


def test_an_idempotent_replay_is_found_by_requester_and_key(work: WorkRepository) -> None:
    record = add_request(work, "r1", requester="alice", idempotency_key="key-1")

    assert work.find_idempotent("alice", "key-1") == record
    assert work.find_idempotent("bob", "key-1") is None
    assert work.find_idempotent("alice", "key-2") is None


def test_a_taken_idempotency_key_is_refused_and_the_session_goes_on(work: WorkRepository) -> None:
    first = add_request(work, "r1", requester="alice", idempotency_key="key-1")

    with pytest.raises(DuplicateIdempotencyKey):
        add_request(work, "r2", requester="alice", idempotency_key="key-1")

    assert work.get_request("r2") is None
    assert work.find_idempotent("alice", "key-1") == first
    # The lost race spoils nothing: the same transaction keeps working.
    add_request(work, "r3", requester="bob", idempotency_key="key-1")
    assert work.get_request("r3") is not None


def test_requests_without_a_key_never_collide(work: WorkRepository) -> None:
    add_request(work, "r1", requester="alice")
    add_request(work, "r2", requester="alice")

    assert ids(work.list_requests(RequestFilters(), limit=10, offset=0)[0]) == ["r2", "r1"]


# --- listing ----------------------------------------------------------------------------------


def test_requests_are_listed_newest_first_with_the_total(work: WorkRepository) -> None:
    add_request(work, "r1", created=1)
    add_request(work, "r3", created=3)
    add_request(work, "r2", created=2)
    # Same creation time: the larger id counts as newer.
    add_request(work, "r2b", created=2)

    page, total = work.list_requests(RequestFilters(), limit=10, offset=0)

    assert ids(page) == ["r3", "r2b", "r2", "r1"]
    assert total == 4


def test_listing_pages_through_offset_and_limit(work: WorkRepository) -> None:
    for n in range(5):
        add_request(work, f"r{n}", created=n)

    assert work.list_requests(RequestFilters(), limit=2, offset=0) == (
        [work.get_request("r4"), work.get_request("r3")],
        5,
    )
    assert ids(work.list_requests(RequestFilters(), limit=2, offset=2)[0]) == ["r2", "r1"]
    assert ids(work.list_requests(RequestFilters(), limit=2, offset=4)[0]) == ["r0"]
    assert work.list_requests(RequestFilters(), limit=2, offset=9) == ([], 5)


def test_listing_filters_by_requester_and_status(work: WorkRepository) -> None:
    add_request(work, "a-pending", requester="alice", status=_S.PENDING, created=1)
    add_request(work, "a-done", requester="alice", status=_S.EXECUTED, created=2)
    add_request(work, "b-pending", requester="bob", status=_S.PENDING, created=3)

    def listed(filters: RequestFilters) -> tuple[list[str], int]:
        page, total = work.list_requests(filters, limit=10, offset=0)
        return ids(page), total

    assert listed(RequestFilters(requester="alice")) == (["a-done", "a-pending"], 2)
    assert listed(RequestFilters(status=_S.PENDING)) == (["b-pending", "a-pending"], 2)
    assert listed(RequestFilters(requester="alice", status=_S.PENDING)) == (["a-pending"], 1)
    assert listed(RequestFilters(requester="nobody")) == ([], 0)


# --- status changes -------------------------------------------------------------------------


def test_a_status_change_from_an_allowed_status_wins(work: WorkRepository) -> None:
    record = add_request(work, "r1", status=_S.PENDING)

    won = work.update_request_status(
        "r1", allowed_from={_S.PENDING, _S.APPROVED}, to=_S.CANCELLED, now=at(10)
    )

    assert won
    assert work.get_request("r1") == RequestRecord(
        **{**vars(record), "status": _S.CANCELLED, "updated_at": at(10)}
    )


def test_a_status_change_from_another_status_loses_and_changes_nothing(
    work: WorkRepository,
) -> None:
    record = add_request(work, "r1", status=_S.EXECUTED)

    assert not work.update_request_status(
        "r1", allowed_from={_S.PENDING}, to=_S.CANCELLED, now=at(10)
    )
    assert work.get_request("r1") == record


def test_of_two_racing_status_changes_only_the_first_wins(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.DISPATCHED)

    def claim() -> bool:
        return work.update_request_status(
            "r1", allowed_from={_S.DISPATCHED}, to=_S.RUNNING, now=at(10)
        )

    assert claim()
    assert not claim()


def test_no_allowed_status_and_unknown_requests_never_change(work: WorkRepository) -> None:
    record = add_request(work, "r1", status=_S.PENDING)

    assert not work.update_request_status("r1", allowed_from=(), to=_S.CANCELLED, now=at(10))
    assert not work.update_request_status(
        "missing", allowed_from={_S.PENDING}, to=_S.CANCELLED, now=at(10)
    )
    assert work.get_request("r1") == record


def test_a_status_change_sets_the_given_columns_and_keeps_the_others(
    work: WorkRepository,
) -> None:
    add_request(
        work, "r1", status=_S.DISPATCHED, cancelled_by="old", expires_at=at(100), reason="why"
    )

    assert work.update_request_status(
        "r1",
        allowed_from={_S.DISPATCHED},
        to=_S.CANCELLED,
        now=at(10),
        changes=RequestUpdate(resolved_at=at(9), cancel_reason="stop"),
    )

    changed = work.get_request("r1")
    assert changed is not None
    assert (changed.resolved_at, changed.cancel_reason) == (at(9), "stop")
    assert (changed.cancelled_by, changed.expires_at, changed.reason) == ("old", at(100), "why")


def test_every_column_a_status_change_may_set(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.APPROVED)

    assert work.update_request_status(
        "r1",
        allowed_from={_S.APPROVED},
        to=_S.DISPATCHED,
        now=at(10),
        changes=RequestUpdate(
            pre_dispatch_status=_S.APPROVED,
            resolved_at=at(1),
            expires_at=at(2),
            cancelled_by="carol",
            cancel_reason="because",
        ),
    )

    changed = work.get_request("r1")
    assert changed is not None
    assert (
        changed.status,
        changed.pre_dispatch_status,
        changed.resolved_at,
        changed.expires_at,
        changed.cancelled_by,
        changed.cancel_reason,
        changed.updated_at,
    ) == (_S.DISPATCHED, _S.APPROVED, at(1), at(2), "carol", "because", at(10))


def test_the_pre_dispatch_status_is_kept_unless_cleared(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.DISPATCHED, pre_dispatch_status=_S.AUTO_APPROVED)

    assert work.update_request_status("r1", allowed_from={_S.DISPATCHED}, to=_S.RUNNING, now=at(1))
    running = work.get_request("r1")
    assert running is not None and running.pre_dispatch_status is _S.AUTO_APPROVED

    assert work.update_request_status(
        "r1",
        allowed_from={_S.RUNNING},
        to=_S.AUTO_APPROVED,
        now=at(2),
        changes=RequestUpdate(clear_pre_dispatch_status=True),
    )
    returned = work.get_request("r1")
    assert returned is not None and returned.pre_dispatch_status is None


def test_a_given_pre_dispatch_status_wins_over_clearing_it(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.APPROVED)

    assert work.update_request_status(
        "r1",
        allowed_from={_S.APPROVED},
        to=_S.DISPATCHED,
        now=at(1),
        changes=RequestUpdate(pre_dispatch_status=_S.APPROVED, clear_pre_dispatch_status=True),
    )
    changed = work.get_request("r1")
    assert changed is not None and changed.pre_dispatch_status is _S.APPROVED


def test_updated_before_guards_a_sweep_strictly(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.DISPATCHED, updated=10)

    def sweep(before: float) -> bool:
        return work.update_request_status(
            "r1",
            allowed_from={_S.DISPATCHED},
            to=_S.APPROVED,
            now=at(100),
            updated_before=at(before),
        )

    assert not sweep(10)  # touched exactly at the cut-off: not stale yet
    assert sweep(10.000001)


# --- pending approvers ------------------------------------------------------------------------


def test_pending_approvers_are_replaced_deduplicated_and_sorted(work: WorkRepository) -> None:
    add_request(work, "r1")
    add_request(work, "r2")
    work.replace_pending_approvers("r1", 0, ["role:dba", "user:bob"])
    work.replace_pending_approvers("r2", 0, ["role:other"])

    work.replace_pending_approvers("r1", 1, ["user:zed", "role:lead", "user:zed"])

    assert work.pending_approvers("r1") == [(1, "role:lead"), (1, "user:zed")]
    assert work.pending_approvers("r2") == [(0, "role:other")]


def test_no_selectors_clear_the_pending_approvers(work: WorkRepository) -> None:
    add_request(work, "r1")
    work.replace_pending_approvers("r1", 0, ["role:dba"])

    work.replace_pending_approvers("r1", 1, [])

    assert work.pending_approvers("r1") == []
    assert work.pending_approvers("never-set") == []


# --- dispatch, migrations and sweeps -------------------------------------------------------


def test_dispatched_requests_in_the_scopes_oldest_update_first(work: WorkRepository) -> None:
    add_request(work, "late", status=_S.DISPATCHED, updated=3)
    add_request(work, "early", status=_S.DISPATCHED, updated=1)
    add_request(work, "tie-b", status=_S.DISPATCHED, updated=2)
    add_request(work, "tie-a", status=_S.DISPATCHED, updated=2)
    add_request(work, "staging", scope=STAGING, status=_S.DISPATCHED, updated=0)
    add_request(work, "billing", scope=BILLING, status=_S.DISPATCHED, updated=0)
    add_request(work, "approved", status=_S.APPROVED, updated=0)

    found = work.dispatched_requests([PROD, STAGING], (), limit=10)

    assert ids(found) == ["staging", "early", "tie-a", "tie-b", "late"]
    assert ids(work.dispatched_requests([PROD], (), limit=2)) == ["early", "tie-a"]


def test_dispatched_requests_of_the_given_operations_only(work: WorkRepository) -> None:
    add_request(work, "select", status=_S.DISPATCHED, updated=1)
    add_request(work, "dml", status=_S.DISPATCHED, updated=2, operation=Operation.EXECUTE_DML)
    add_request(work, "migration", status=_S.DISPATCHED, updated=3, operation=Operation.MIGRATE_UP)

    found = work.dispatched_requests(
        [PROD], {Operation.EXECUTE_DML, Operation.MIGRATE_UP}, limit=10
    )

    assert ids(found) == ["dml", "migration"]


def test_no_scopes_or_no_room_dispatch_nothing(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.DISPATCHED)

    assert work.dispatched_requests([], (), limit=10) == []
    assert work.dispatched_requests([PROD], (), limit=0) == []


@pytest.mark.parametrize(
    ("operation", "status", "scope", "active"),
    [
        (Operation.MIGRATE_UP, _S.RUNNING, PROD, True),
        (Operation.MIGRATE_DOWN, _S.RUNNING, PROD, True),
        (Operation.MIGRATE_REPAIR, _S.RUNNING, PROD, True),
        (Operation.MIGRATE_STATUS, _S.RUNNING, PROD, False),
        (Operation.EXECUTE_DML, _S.RUNNING, PROD, False),
        (Operation.MIGRATE_UP, _S.DISPATCHED, PROD, False),
        (Operation.MIGRATE_UP, _S.RUNNING, STAGING, False),
    ],
)
def test_only_a_running_schema_migration_of_the_database_is_active(
    work: WorkRepository, operation: Operation, status: RequestStatus, scope: Scope, active: bool
) -> None:
    add_request(work, "other", operation=operation, status=status, scope=scope)
    add_request(work, "mine", operation=Operation.MIGRATE_UP, status=_S.DISPATCHED)

    work.lock_migrations(PROD)

    assert work.migration_active(PROD, "mine") is active


def test_a_migration_does_not_exclude_itself(work: WorkRepository) -> None:
    add_request(work, "mine", operation=Operation.MIGRATE_UP, status=_S.RUNNING)

    work.lock_migrations(PROD)

    assert not work.migration_active(PROD, "mine")
    assert work.migration_active(PROD, "another")


def test_stale_dispatched_requests_oldest_first(work: WorkRepository) -> None:
    add_request(work, "newer", status=_S.DISPATCHED, updated=5)
    add_request(work, "older", status=_S.DISPATCHED, updated=1)
    add_request(work, "at-cut-off", status=_S.DISPATCHED, updated=10)
    add_request(work, "running", status=_S.RUNNING, updated=0)

    assert ids(work.stale_dispatched(at(10), limit=10)) == ["older", "newer"]
    assert ids(work.stale_dispatched(at(10), limit=1)) == ["older"]


def test_expirable_requests_in_the_statuses_soonest_expiry_first(work: WorkRepository) -> None:
    add_request(work, "later", status=_S.PENDING, expires_at=at(5))
    add_request(work, "sooner", status=_S.APPROVED, expires_at=at(1))
    add_request(work, "at-now", status=_S.PENDING, expires_at=at(10))
    add_request(work, "no-expiry", status=_S.PENDING)
    add_request(work, "executed", status=_S.EXECUTED, expires_at=at(0))

    statuses = {_S.PENDING, _S.APPROVED}
    assert ids(work.expirable_requests(statuses, at(10), limit=10)) == ["sooner", "later"]
    assert ids(work.expirable_requests(statuses, at(10), limit=1)) == ["sooner"]
    assert ids(work.expirable_requests({_S.PENDING}, at(10), limit=10)) == ["later"]
    assert work.expirable_requests((), at(10), limit=10) == []
