"""Approve and reject over the in-memory store (docs/server.md §2.4, §2.5), and what
approvers then see: `approval_progress`, visibility and `pending_for_me`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from application.server.approvals.approve import ApproveRequest
from application.server.approvals.pending import RequestExpired
from application.server.approvals.reject import RejectRequest
from application.server.ports.services import NotificationWaiter
from application.server.ports.work.requests import RequestRecord
from application.server.requests.cancel import CancelRequest
from application.server.requests.queries import GetRequest, ListRequests
from application.server.requests.snapshots import workflow_snapshot
from application.server.settings import RetentionSettings, ServerSettings
from domain.server.api_tokens import SubjectType
from domain.server.approvals import ApprovalAction
from domain.server.errors import Conflict, Forbidden, NotFound, Validation
from domain.server.rbac import (
    AGENT_DEFAULT,
    BUILT_IN_ROLES,
    Principal,
    Selector,
    SelectorKind,
    define_role,
)
from domain.server.request_lifecycle import RequestStatus
from domain.server.workflows import ApprovalStep, Approver, Workflow
from domain.shared.operations import Operation
from tests.fakes.clock import FakeClock
from tests.fakes.store import FakeServerStore

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DBA = Selector(SelectorKind.ROLE, "dba")
OPS = Selector(SelectorKind.GROUP, "ops")
ERIN_SEL = Selector(SelectorKind.USER, "erin")

#: A role, then a named user.
TWO_STEPS = Workflow(
    database="app",
    environment="production",
    pending_ttl_secs=3600,
    approved_ttl_secs=600,
    steps=(ApprovalStep(approvers=(Approver(DBA),)), ApprovalStep(approvers=(Approver(ERIN_SEL),))),
)


def person(name: str, *roles: str, groups: tuple[str, ...] = ()) -> Principal:
    resolved = tuple(
        BUILT_IN_ROLES[r] if r in BUILT_IN_ROLES else define_role(r, []) for r in roles
    )
    return Principal(name, SubjectType.USER, resolved, frozenset(groups))


ALICE = person("alice", "requester")
DANA = person("dana", "approver", "dba")
FRED = person("fred", "approver", "dba")
ERIN = person("erin", "approver")
OMAR = person("omar", "approver", "dba", groups=("ops",))
STRANGER = person("sam", "approver")
OPERATOR = person("ops", "operator")
AGENT = Principal("agent", SubjectType.AGENT, (BUILT_IN_ROLES[AGENT_DEFAULT],))


class RecordingNotifier:
    def __init__(self) -> None:
        self.topics: list[str] = []

    def arm(self, topics: Iterable[str]) -> NotificationWaiter:
        raise NotImplementedError

    def notify(self, topic: str, job: object = None) -> None:
        self.topics.append(topic)

    def notify_all(self) -> None:
        pass


@dataclass
class World:
    store: FakeServerStore = field(default_factory=FakeServerStore)
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)

    def __post_init__(self) -> None:
        settings = ServerSettings.for_state_dir(
            Path("/nonexistent"),
            retention=RetentionSettings(approved_ttl_secs=7200),
        )
        self.approve_uc = ApproveRequest(
            store=self.store, settings=settings, clock=self.clock, notifier=self.notifier
        )
        self.reject_uc = RejectRequest(store=self.store, clock=self.clock, notifier=self.notifier)
        self.cancel_uc = CancelRequest(store=self.store, clock=self.clock, notifier=self.notifier)
        self.get_uc = GetRequest(store=self.store, clock=self.clock, notifier=self.notifier)
        self.list_uc = ListRequests(store=self.store)

    def pending(
        self, request_id: str = "r1", workflow: Workflow = TWO_STEPS, requester: str = "alice"
    ) -> str:
        """A request as create stores one that needs approval."""
        record = RequestRecord(
            id=request_id,
            requester=requester,
            operation=Operation.EXECUTE_DML,
            database="app",
            environment="production",
            detail="UPDATE t SET x = 1 WHERE id = 2",
            status=RequestStatus.PENDING,
            created_at=self.clock.now(),
            updated_at=self.clock.now(),
            workflow_snapshot_json=workflow_snapshot(workflow),
            expires_at=self.clock.now() + timedelta(seconds=workflow.pending_ttl_secs or 60),
        )
        with self.store.write() as session:
            session.work.insert_request(record)
            session.work.replace_pending_approvers(
                request_id, 0, [str(s) for s in workflow.steps[0].selectors]
            )
        return request_id

    def record(self, request_id: str = "r1") -> RequestRecord:
        with self.store.read() as session:
            found = session.work.get_request(request_id)
        assert found is not None
        return found

    def pending_approvers(self, request_id: str = "r1") -> list[tuple[int, str]]:
        with self.store.read() as session:
            return session.work.pending_approvers(request_id)

    def event_types(self) -> list[str]:
        return [e.event_type for e in self.store.events()]


@pytest.fixture
def world() -> World:
    return World()


# --- approve ---------------------------------------------------------------------------------


def test_two_steps_approved_by_a_role_then_a_named_user(world: World) -> None:
    world.pending()
    first = world.approve_uc.approve(DANA, "r1", comment="checked the WHERE")
    assert (first.status, first.matched_selector, first.step_completed) == (
        RequestStatus.PENDING,
        "role:dba",
        True,
    )
    assert (first.current_step, first.total_steps) == (1, 2)
    assert world.pending_approvers() == [(1, "user:erin")]
    step_event = world.store.events("step.approved")[0]
    assert step_event.actor_id == "dana"
    assert '"step_number":1' in step_event.metadata_json
    assert '"approval_comment":"checked the WHERE"' in step_event.metadata_json

    world.clock.advance(30)
    final = world.approve_uc.approve(ERIN, "r1")
    assert (final.status, final.matched_selector, final.current_step) == (
        RequestStatus.APPROVED,
        "user:erin",
        2,
    )
    record = world.record()
    assert record.status is RequestStatus.APPROVED  # waits for resume: dispatch on demand
    assert record.resolved_at == world.clock.now()
    assert record.expires_at == world.clock.now() + timedelta(seconds=600)  # approved_ttl_secs
    assert world.pending_approvers() == []
    assert world.event_types() == ["step.approved", "request.approved"]
    with world.store.read() as session:
        rows = session.work.approvals_for_request("r1")
    assert [(a.actor_id, a.step_index, a.matched_selector, a.comment) for a in rows] == [
        ("dana", 0, "role:dba", "checked the WHERE"),
        ("erin", 1, "user:erin", None),
    ]
    assert world.notifier.topics == ["request:r1", "request:r1"]


def test_the_approved_ttl_falls_back_to_retention(world: World) -> None:
    one_step = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA),)),))
    world.pending(workflow=one_step)
    world.approve_uc.approve(DANA, "r1")
    assert world.record().expires_at == T0 + timedelta(seconds=7200)


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (ALICE, "own request"),
        (AGENT, "agent tokens"),
        (ERIN, "not an approver"),
        (STRANGER, "not an approver"),
    ],
)
def test_refused_approvers_change_nothing(world: World, who: Principal, message: str) -> None:
    world.pending()
    with pytest.raises(Forbidden, match=message):
        world.approve_uc.approve(who, "r1")
    assert world.record().updated_at == T0
    assert world.event_types() == []


def test_the_requester_is_refused_even_when_an_approver(world: World) -> None:
    world.pending(requester="dana")
    with pytest.raises(Forbidden, match="own request"):
        world.approve_uc.approve(DANA, "r1")
    allowed = Workflow(steps=TWO_STEPS.steps, allow_self_approve=True)
    world.pending("r2", allowed, requester="dana")
    assert world.approve_uc.approve(DANA, "r2").step_completed


def test_the_same_approver_cannot_approve_both_steps(world: World) -> None:
    twice = Workflow(
        steps=(ApprovalStep(approvers=(Approver(DBA),)), ApprovalStep(approvers=(Approver(DBA),)))
    )
    world.pending(workflow=twice)
    world.approve_uc.approve(DANA, "r1")
    with pytest.raises(Forbidden, match="earlier step"):
        world.approve_uc.approve(DANA, "r1")
    assert world.approve_uc.approve(FRED, "r1").status is RequestStatus.APPROVED


def test_the_same_approver_across_steps_when_allowed(world: World) -> None:
    twice = Workflow(
        allow_same_approver_across_steps=True,
        steps=(ApprovalStep(approvers=(Approver(DBA),)), ApprovalStep(approvers=(Approver(DBA),))),
    )
    world.pending(workflow=twice)
    world.approve_uc.approve(DANA, "r1")
    assert world.approve_uc.approve(DANA, "r1").status is RequestStatus.APPROVED


def test_one_approval_per_approver_per_step(world: World) -> None:
    two_dbas = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA, 2),)),))
    world.pending(workflow=two_dbas)
    first = world.approve_uc.approve(DANA, "r1")
    assert not first.step_completed and first.current_step == 0
    assert world.pending_approvers() == [(0, "role:dba")]
    with pytest.raises(Conflict, match="already approved this step"):
        world.approve_uc.approve(DANA, "r1")
    assert world.approve_uc.approve(FRED, "r1").status is RequestStatus.APPROVED


def test_an_ambiguous_approver_must_name_a_selector(world: World) -> None:
    both = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA), Approver(OPS))),))
    world.pending(workflow=both)
    with pytest.raises(Validation, match=r"ambiguous.*role:dba, group:ops"):
        world.approve_uc.approve(OMAR, "r1")
    with pytest.raises(Validation, match="not one you match"):
        world.approve_uc.approve(OMAR, "r1", selector="user:omar")
    done = world.approve_uc.approve(OMAR, "r1", selector="group:ops")
    assert (done.matched_selector, done.status) == ("group:ops", RequestStatus.PENDING)


def test_an_expired_request_is_expired_on_approval(world: World) -> None:
    world.pending()
    world.clock.advance(3600)  # the workflow's pending_ttl_secs
    with pytest.raises(RequestExpired) as caught:
        world.approve_uc.approve(DANA, "r1")
    assert caught.value.status == 410
    assert world.record().status is RequestStatus.EXPIRED
    assert world.event_types() == ["request.expired"]
    with pytest.raises(Conflict, match="invalid transition: expired"):
        world.approve_uc.approve(DANA, "r1")


def test_an_expired_request_is_expired_on_rejection_too(world: World) -> None:
    world.pending()
    world.clock.advance(4000)
    with pytest.raises(RequestExpired):
        world.reject_uc.reject(DANA, "r1", "no")
    assert world.record().status is RequestStatus.EXPIRED


def test_bad_input(world: World) -> None:
    world.pending()
    with pytest.raises(Validation, match="comment too long"):
        world.approve_uc.approve(DANA, "r1", comment="x" * 1025)
    with pytest.raises(Validation, match="reason too long"):
        world.reject_uc.reject(DANA, "r1", "é" * 513)
    with pytest.raises(NotFound):
        world.approve_uc.approve(DANA, "missing")
    with pytest.raises(NotFound):
        world.reject_uc.reject(DANA, "missing")


def test_a_request_without_steps_cannot_be_approved(world: World) -> None:
    world.pending()
    with world.store.write() as session:
        record = session.work.get_request("r1")
        assert record is not None
        session.work.state.requests["r1"] = replace(record, workflow_snapshot_json=None)
    with pytest.raises(Conflict, match="no approval steps"):
        world.approve_uc.approve(DANA, "r1")


# --- reject ----------------------------------------------------------------------------------


def test_reject_then_approve_or_cancel_is_409(world: World) -> None:
    world.pending()
    assert world.reject_uc.reject(DANA, "r1", "not during business hours") == (
        "r1",
        RequestStatus.REJECTED,
    )
    record = world.record()
    assert (record.status, record.resolved_at) == (RequestStatus.REJECTED, T0)
    event = world.store.events("request.rejected")[0]
    assert (event.actor_id, event.reason) == ("dana", "not during business hours")
    with world.store.read() as session:
        (row,) = session.work.approvals_for_request("r1")
    assert (row.action, row.matched_selector, row.comment) == (
        ApprovalAction.REJECT,
        "role:dba",
        "not during business hours",
    )
    with pytest.raises(Conflict, match=r"invalid transition: rejected \+ ApproveStep"):
        world.approve_uc.approve(DANA, "r1")
    with pytest.raises(Conflict, match=r"invalid transition: rejected \+ Reject"):
        world.reject_uc.reject(DANA, "r1")
    # Resume (the other way back from a final status) is refused by the same table:
    # rejected + Dispatch is not a transition (tests/unit/domain/server/test_request_lifecycle).
    with pytest.raises(Conflict, match=r"invalid transition: rejected \+ Cancel"):
        world.cancel_uc.cancel(ALICE, "r1")


@pytest.mark.parametrize("who", [ALICE, AGENT, ERIN, STRANGER])
def test_only_current_step_approvers_reject(world: World, who: Principal) -> None:
    world.pending()
    with pytest.raises(Forbidden):
        world.reject_uc.reject(who, "r1")
    assert world.record().status is RequestStatus.PENDING
    assert world.event_types() == []


def test_the_second_step_approver_rejects_after_the_first(world: World) -> None:
    world.pending()
    world.approve_uc.approve(DANA, "r1")
    with pytest.raises(Forbidden):
        world.reject_uc.reject(FRED, "r1")
    assert world.reject_uc.reject(ERIN, "r1")[1] is RequestStatus.REJECTED
    assert world.pending_approvers() == []


# --- what approvers see ----------------------------------------------------------------------


def test_approvers_of_the_current_step_see_the_request(world: World) -> None:
    world.pending()
    assert world.get_uc.get(DANA, "r1").approvers == ("role:dba",)
    with pytest.raises(Forbidden):
        world.get_uc.get(ERIN, "r1")  # not yet: erin approves the second step
    with pytest.raises(Forbidden):
        world.get_uc.get(STRANGER, "r1")
    world.approve_uc.approve(DANA, "r1", comment="ok")
    details = world.get_uc.get(ERIN, "r1")
    assert details.approvers == ("user:erin",)
    assert world.get_uc.get(DANA, "r1").record.id == "r1"  # has approved: still sees it
    world.approve_uc.approve(ERIN, "r1")
    assert world.get_uc.get(ERIN, "r1").approvers == ()
    with pytest.raises(Forbidden):
        world.get_uc.get(FRED, "r1")  # no longer pending, never acted on it


def test_approval_progress(world: World) -> None:
    world.pending()
    world.approve_uc.approve(DANA, "r1", comment="ok")
    progress = world.get_uc.get(ALICE, "r1").approval_progress
    assert progress is not None
    assert (progress.current_step, progress.total_steps, progress.awaiting) == (
        1,
        2,
        ("user:erin",),
    )
    first, second = progress.steps
    assert first.satisfied and not second.satisfied
    assert [(a.actor_id, a.matched_selector, a.comment) for a in first.approvals] == [
        ("dana", "role:dba", "ok")
    ]
    assert [(r.selector, r.min, r.current) for r in second.approvers_required] == [
        ("user:erin", 1, 0)
    ]


def test_pending_for_me(world: World) -> None:
    world.pending("r1")
    world.clock.advance(1)
    world.pending("r2", requester="dana")
    world.clock.advance(1)
    world.pending("r3")
    world.approve_uc.approve(DANA, "r3")

    def mine(who: Principal, status: str | None = None, user: str | None = None) -> list[str]:
        listing = world.list_uc.list(who, pending_for_me=True, status=status, user=user)
        assert listing.total == len(listing.requests)
        return [r.id for r in listing.requests]

    assert mine(DANA) == ["r1"]  # r2 is dana's own, r3 she approved already
    assert mine(FRED) == ["r2", "r1"]
    assert mine(ERIN) == ["r3"]
    assert mine(STRANGER) == []
    assert mine(FRED, status="approved") == []
    assert mine(FRED, user="dana") == ["r2"]
    world.reject_uc.reject(ERIN, "r3")
    assert mine(ERIN) == []


def test_the_list_shows_approvers_what_awaits_them_and_what_they_acted_on(world: World) -> None:
    world.pending("r1")
    world.clock.advance(1)
    world.pending("r2")
    world.clock.advance(1)
    world.pending("r3", requester="erin")
    world.approve_uc.approve(DANA, "r2")
    listing = world.list_uc.list(ERIN)
    assert [r.id for r in listing.requests] == ["r3", "r2"]  # own, and awaiting erin
    awaiting = listing.awaiting["r2"]
    assert (awaiting.current_step, awaiting.total_steps, awaiting.next_approvers) == (
        1,
        2,
        ("user:erin",),
    )
    assert [r.id for r in world.list_uc.list(DANA).requests] == ["r3", "r2", "r1"]
    assert [r.id for r in world.list_uc.list(STRANGER).requests] == []
    assert len(world.list_uc.list(OPERATOR).requests) == 3  # request.view:any
