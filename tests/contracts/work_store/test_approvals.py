"""`ApprovalRepository` and the approver views of `list_requests`: the same behaviour from
the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from application.server.ports.work import WorkRepository
from application.server.ports.work.requests import RequestFilters, RequestRecord, RequestViewer
from domain.server.approvals import Approval, ApprovalAction
from domain.server.request_lifecycle import RequestStatus
from tests.contracts.work_store.records import add_request, at

_S = RequestStatus


def an_approval(
    approval_id: str,
    request_id: str = "r1",
    *,
    actor: str = "dana",
    step: int = 0,
    action: ApprovalAction = ApprovalAction.APPROVE,
    created: float = 0,
    selector: str | None = "role:dba",
    comment: str | None = None,
) -> Approval:
    return Approval(
        id=approval_id,
        request_id=request_id,
        action=action,
        actor_id=actor,
        step_index=step,
        matched_selector=selector,
        comment=comment,
        created_at=at(created),
    )


def ids(records: list[RequestRecord]) -> list[str]:
    return [record.id for record in records]


def test_approvals_read_back_oldest_first_field_for_field(work: WorkRepository) -> None:
    add_request(work, "r1")
    add_request(work, "r2")
    second = an_approval(
        "a2", actor="erin", step=1, created=5, comment="LGTM", selector="user:erin"
    )
    first = an_approval("a1", created=1)
    other = an_approval("a3", "r2")
    for approval in (second, first, other):
        assert work.insert_approval(approval)

    assert work.approvals_for_request("r1") == [first, second]
    assert work.approvals_for_request("missing") == []


def test_one_approval_per_actor_and_step(work: WorkRepository) -> None:
    add_request(work, "r1")
    assert work.insert_approval(an_approval("a1"))

    assert not work.insert_approval(an_approval("a2", created=1, selector="group:ops"))
    # Another step, another actor, or a rejection is not a duplicate.
    assert work.insert_approval(an_approval("a3", step=1))
    assert work.insert_approval(an_approval("a4", actor="erin"))
    assert work.insert_approval(an_approval("a5", action=ApprovalAction.REJECT, selector=None))
    assert [a.id for a in work.approvals_for_request("r1")] == ["a1", "a3", "a4", "a5"]


def test_awaiting_selectors_finds_pending_requests_of_the_current_step(
    work: WorkRepository,
) -> None:
    add_request(work, "dba", created=1)
    add_request(work, "ops", created=2)
    add_request(work, "done", created=3, status=_S.APPROVED)
    work.replace_pending_approvers("dba", 0, ["role:dba", "user:erin"])
    work.replace_pending_approvers("ops", 1, ["group:ops"])
    work.replace_pending_approvers("done", 0, ["role:dba"])

    def awaiting(*selectors: str) -> list[str]:
        rows, total = work.list_requests(
            RequestFilters(awaiting_selectors=selectors), limit=10, offset=0
        )
        assert total == len(rows)
        return ids(rows)

    assert awaiting("role:dba") == ["dba"]
    assert awaiting("user:erin", "group:ops") == ["ops", "dba"]
    assert awaiting("role:other") == []
    assert awaiting() == []


def test_a_viewer_sees_own_awaiting_and_acted_on_requests(work: WorkRepository) -> None:
    add_request(work, "own", created=1, requester="bob")
    add_request(work, "awaiting", created=2)
    add_request(work, "awaited-before", created=3, status=_S.REJECTED)
    add_request(work, "approved-by-bob", created=4, status=_S.APPROVED)
    add_request(work, "stranger", created=5)
    work.replace_pending_approvers("awaiting", 0, ["role:dba"])
    work.replace_pending_approvers("awaited-before", 0, ["role:dba"])
    work.replace_pending_approvers("stranger", 0, ["role:other"])
    work.insert_approval(an_approval("a1", "approved-by-bob", actor="bob"))

    rows, total = work.list_requests(
        RequestFilters(visible_to=RequestViewer("bob", ("role:dba", "user:bob"))),
        limit=10,
        offset=0,
    )
    assert ids(rows) == ["approved-by-bob", "awaiting", "own"]
    assert total == 3

    rows, total = work.list_requests(
        RequestFilters(requester="alice", visible_to=RequestViewer("bob", ("role:dba",))),
        limit=1,
        offset=1,
    )
    assert (ids(rows), total) == (["awaiting"], 2)
