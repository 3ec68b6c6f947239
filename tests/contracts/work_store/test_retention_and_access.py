"""The results listing and the retention purge's lookups and deletes: the same behaviour
from the fake, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from application.server.ports.work import WorkRepository
from application.server.ports.work.executions import (
    RESULT_PURGED,
    ExecutionStatus,
    ResultQuery,
)
from domain.server.approvals import Approval, ApprovalAction
from domain.server.request_lifecycle import RequestStatus
from tests.contracts.work_store.records import (
    BILLING,
    PROD,
    STAGING,
    a_dry_run,
    a_result,
    add_request,
    an_execution,
    at,
)

_S = RequestStatus


def approve(
    work: WorkRepository,
    request_id: str,
    actor: str,
    *,
    step: int = 0,
    when: float = 0,
    action: ApprovalAction = ApprovalAction.APPROVE,
) -> Approval:
    record = Approval(
        id=f"ap-{request_id}-{actor}-{step}-{action.value}",
        request_id=request_id,
        action=action,
        actor_id=actor,
        step_index=step,
        created_at=at(when),
        matched_selector="role:dba",
        comment="looks fine",
    )
    assert work.insert_approval(record)
    return record


def finished(
    work: WorkRepository,
    request_id: str,
    *,
    stored: float = 0,
    storage_key: str = "",
    expires: float | None = None,
    **fields: object,
) -> None:
    """A request with one completed execution and its result summary."""
    add_request(work, request_id, status=_S.EXECUTED, **fields)  # type: ignore[arg-type]
    execution = an_execution(f"e-{request_id}", request_id, status=ExecutionStatus.COMPLETED)
    work.insert_execution(execution)
    work.insert_result(
        a_result(
            execution,
            stored=stored,
            storage_key=storage_key,
            expires_at=None if expires is None else at(expires),
        )
    )


# --- GET /api/results -----------------------------------------------------------------------


def listed(work: WorkRepository, query: ResultQuery, limit: int = 50, offset: int = 0) -> list[str]:
    return [item.request.id for item in work.list_results(query, limit=limit, offset=offset)]


def test_results_listed_are_the_callers_newest_first_with_their_requests(
    work: WorkRepository,
) -> None:
    finished(work, "own-old", stored=1, requester="bob")
    finished(work, "own-new", stored=2, requester="bob", storage_key="own-new/e/1")
    finished(work, "alices", stored=3)
    everywhere = frozenset({PROD, STAGING, BILLING})

    items = work.list_results(ResultQuery("bob", everywhere), limit=50, offset=0)
    assert [item.request.id for item in items] == ["own-new", "own-old"]
    newest = items[0]
    assert (newest.request.requester, newest.request.scope) == ("bob", PROD)
    assert (newest.summary.execution_id, newest.summary.storage_key) == ("e-own-new", "own-new/e/1")
    assert listed(work, ResultQuery("bob", everywhere), limit=1, offset=1) == ["own-old"]


def test_results_listed_through_approval_share_or_a_whole_scope(work: WorkRepository) -> None:
    finished(work, "approved", stored=1)
    finished(work, "shared-user", stored=2, share_with=("user:bob",))
    finished(work, "shared-role", stored=3, share_with=("requester", "role:dba"))
    finished(work, "look-alike", stored=4, share_with=("user:bobby", "role:dba_x"))
    finished(work, "staging", stored=5, scope=STAGING)
    finished(work, "billing", stored=6, scope=BILLING)
    approve(work, "approved", "bob")
    everywhere = frozenset({PROD, STAGING, BILLING})

    query = ResultQuery("bob", everywhere, share_selectors=("user:bob", "role:dba"))
    assert listed(work, query) == ["shared-role", "shared-user", "approved"]
    whole = ResultQuery("bob", everywhere, every_result_in=frozenset({STAGING}))
    assert listed(work, whole) == ["staging", "approved"]


def test_results_outside_the_callers_scopes_or_filters_are_not_listed(
    work: WorkRepository,
) -> None:
    finished(work, "prod", stored=1, requester="bob")
    finished(work, "staging", stored=2, requester="bob", scope=STAGING)
    finished(work, "billing", stored=3, requester="bob", scope=BILLING)

    assert listed(work, ResultQuery("bob", frozenset({PROD, BILLING}))) == ["billing", "prod"]
    everywhere = frozenset({PROD, STAGING, BILLING})
    by_db = ResultQuery("bob", everywhere, database="orders")
    assert listed(work, by_db) == ["staging", "prod"]
    by_env = ResultQuery("bob", everywhere, environment="prod")
    assert listed(work, by_env) == ["billing", "prod"]
    wildcard = ResultQuery("bob", everywhere, database="ord%")
    assert listed(work, wildcard) == []
    assert listed(work, ResultQuery("bob", frozenset())) == []


# --- result retention -----------------------------------------------------------------------


def test_expired_results_are_stored_contents_past_their_expiry(work: WorkRepository) -> None:
    finished(work, "due-late", storage_key="a/e/1", expires=20)
    finished(work, "due-early", storage_key="b/e/1", expires=10)
    finished(work, "not-yet", storage_key="c/e/1", expires=100)
    finished(work, "no-content", expires=5)
    finished(work, "kept-forever", storage_key="d/e/1")

    due = work.expired_results(at(50), 10)
    assert [r.request_id for r in due] == ["due-early", "due-late"]
    assert [r.request_id for r in work.expired_results(at(50), 1)] == ["due-early"]


def test_a_purged_result_keeps_its_summary_and_is_purged_once(work: WorkRepository) -> None:
    finished(work, "r1", storage_key="r1/e/1", expires=10)
    result_id = "res-e-r1"

    assert work.mark_result_purged(result_id)
    assert not work.mark_result_purged(result_id)
    summary = work.latest_result("r1")
    assert summary is not None
    assert (summary.status, summary.purged, summary.has_stored_content) == (
        RESULT_PURGED,
        True,
        False,
    )
    assert summary.storage_key == "r1/e/1"
    assert work.expired_results(at(50), 10) == []
    assert work.executions_with_results(["e-r1"]) == set()


def test_results_of_a_request_oldest_first(work: WorkRepository) -> None:
    add_request(work, "r1", status=_S.FAILED)
    for index, stored in ((1, 5), (2, 3)):
        execution = an_execution(f"e{index}", "r1", status=ExecutionStatus.FAILED)
        work.insert_execution(execution)
        work.insert_result(a_result(execution, stored=stored))

    assert [r.execution_id for r in work.results_of_request("r1")] == ["e2", "e1"]
    assert work.results_of_request("other") == []


# --- request retention ----------------------------------------------------------------------


def test_purgeable_requests_are_old_enough_in_the_given_statuses(work: WorkRepository) -> None:
    add_request(work, "old-executed", status=_S.EXECUTED, updated=10)
    add_request(work, "older-cancelled", status=_S.CANCELLED, updated=5)
    add_request(work, "recent", status=_S.EXECUTED, updated=100)
    add_request(work, "old-pending", status=_S.PENDING, updated=1)
    final = {_S.EXECUTED, _S.CANCELLED}

    due = work.purgeable_requests(final, at(50), 10)
    assert [r.id for r in due] == ["older-cancelled", "old-executed"]
    assert [r.id for r in work.purgeable_requests(final, at(50), 1)] == ["older-cancelled"]
    assert work.purgeable_requests((), at(50), 10) == []


def test_a_deleted_request_takes_every_row_that_refers_to_it(work: WorkRepository) -> None:
    finished(work, "r1", storage_key="r1/e/1", updated=10)
    finished(work, "r2", updated=10)
    approve(work, "r1", "bob")
    work.replace_pending_approvers("r1", 0, ["role:dba"])
    work.insert_dry_run_job(a_dry_run("d1", "r1"))

    assert work.delete_request("r1", allowed_from={_S.EXECUTED}, updated_before=at(50))
    assert work.get_request("r1") is None
    assert work.get_execution("e-r1") is None
    assert work.latest_result("r1") is None
    assert work.approvals_for_request("r1") == []
    assert work.pending_approvers("r1") == []
    assert work.get_dry_run_job("d1") is None
    assert work.get_request("r2") is not None
    assert work.latest_result("r2") is not None


@pytest.mark.parametrize(
    ("allowed", "before"),
    [({_S.CANCELLED}, 50), ({_S.EXECUTED}, 10)],
    ids=["status changed", "changed since"],
)
def test_a_request_is_deleted_only_while_its_guard_holds(
    work: WorkRepository, allowed: set[RequestStatus], before: float
) -> None:
    add_request(work, "r1", status=_S.EXECUTED, updated=10)

    assert not work.delete_request("r1", allowed_from=allowed, updated_before=at(before))
    assert work.get_request("r1") is not None
    assert not work.delete_request("missing", allowed_from={_S.EXECUTED}, updated_before=at(50))
