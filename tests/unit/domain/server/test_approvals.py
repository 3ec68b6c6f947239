"""Approval steps against docs/server.md §2.4-§2.5: satisfaction, the current step, the
selector rule, eligibility and the progress shown to clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.server.api_tokens import SubjectType
from domain.server.approvals import (
    Approval,
    ApprovalAction,
    ApprovalOutcome,
    approval_progress,
    awaits_approval_from,
    choose_selector,
    current_step,
    decide_approval,
    is_pending_approver,
    open_selectors,
    rejection_selector,
)
from domain.server.errors import Conflict, Forbidden, Validation
from domain.server.rbac import (
    AGENT_DEFAULT,
    BUILT_IN_ROLES,
    Principal,
    Selector,
    SelectorKind,
    define_role,
    parse_selector,
)
from domain.server.workflows import ApprovalStep, Approver, StepMode, Workflow

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DBA = Selector(SelectorKind.ROLE, "dba")
OPS = Selector(SelectorKind.GROUP, "ops")
ERIN = Selector(SelectorKind.USER, "erin")


def person(name: str, *roles: str, groups: tuple[str, ...] = ()) -> Principal:
    return Principal(
        name,
        SubjectType.USER,
        tuple(define_role(role, []) for role in roles),
        frozenset(groups),
    )


AGENT = Principal("agent", SubjectType.AGENT, (BUILT_IN_ROLES[AGENT_DEFAULT],))
DANA = person("dana", "dba")
FRED = person("fred", "dba")
ERIN_P = person("erin")
OMAR = person("omar", "dba", groups=("ops",))

#: A role, then a named user.
TWO_STEPS = Workflow(
    steps=(
        ApprovalStep(approvers=(Approver(DBA),)),
        ApprovalStep(approvers=(Approver(ERIN),)),
    )
)


def approval(
    actor: str,
    selector: Selector | str,
    step: int = 0,
    action: ApprovalAction = ApprovalAction.APPROVE,
    seconds: int = 0,
) -> Approval:
    return Approval(
        id=f"{actor}-{step}-{action}",
        request_id="r1",
        action=action,
        actor_id=actor,
        step_index=step,
        matched_selector=str(selector),
        comment=None,
        created_at=T0 + timedelta(seconds=seconds),
    )


def decide(
    principal: Principal,
    workflow: Workflow = TWO_STEPS,
    approvals: tuple[Approval, ...] = (),
    selector: str | None = None,
    requester: str = "alice",
) -> ApprovalOutcome:
    return decide_approval(
        principal,
        requester=requester,
        workflow=workflow,
        approvals=approvals,
        requested_selector=selector,
    )


# --- satisfaction and the current step -------------------------------------------------------


def test_mode_all_needs_every_entry_at_its_min() -> None:
    workflow = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA, 2), Approver(OPS))),))
    assert current_step(workflow, []) == 0
    half = [approval("dana", DBA), approval("fred", DBA)]
    assert current_step(workflow, half) == 0
    assert open_selectors(workflow, half) == (OPS,)
    assert current_step(workflow, [*half, approval("omar", OPS)]) == 1


def test_mode_any_needs_one_entry_at_its_min() -> None:
    workflow = Workflow(
        steps=(ApprovalStep(approvers=(Approver(DBA, 2), Approver(OPS)), mode=StepMode.ANY),)
    )
    assert current_step(workflow, [approval("dana", DBA)]) == 0
    assert current_step(workflow, [approval("omar", OPS)]) == 1


def test_rejections_and_other_steps_do_not_count() -> None:
    workflow = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA),)),))
    assert current_step(workflow, [approval("dana", DBA, action=ApprovalAction.REJECT)]) == 0
    assert current_step(workflow, [approval("dana", DBA, step=1)]) == 0


# --- approving a two-step workflow -----------------------------------------------------------


def test_two_steps_approved_by_the_right_people() -> None:
    first = decide(DANA)
    assert (first.step_index, first.matched_selector) == (0, "role:dba")
    assert first.step_completed and not first.final
    assert (first.next_step, first.total_steps, first.next_selectors) == (1, 2, (ERIN,))

    done = decide(ERIN_P, approvals=(approval("dana", DBA),))
    assert (done.step_index, done.matched_selector, done.final) == (1, "user:erin", True)
    assert done.next_selectors == ()


def test_the_requester_may_not_approve_unless_allowed() -> None:
    with pytest.raises(Forbidden, match="own request"):
        decide(DANA, requester="dana")
    allowed = Workflow(steps=TWO_STEPS.steps, allow_self_approve=True)
    assert decide(DANA, allowed, requester="dana").matched_selector == "role:dba"


def test_an_agent_never_approves() -> None:
    with pytest.raises(Forbidden, match="agent"):
        decide(AGENT)


def test_the_same_approver_may_not_approve_two_steps_unless_allowed() -> None:
    workflow = Workflow(
        steps=(ApprovalStep(approvers=(Approver(DBA),)), ApprovalStep(approvers=(Approver(DBA),)))
    )
    with pytest.raises(Forbidden, match="earlier step"):
        decide(DANA, workflow, (approval("dana", DBA),))
    assert decide(FRED, workflow, (approval("dana", DBA),)).final
    across = Workflow(steps=workflow.steps, allow_same_approver_across_steps=True)
    assert decide(DANA, across, (approval("dana", DBA),)).final


def test_no_one_outside_the_current_step_approves() -> None:
    with pytest.raises(Forbidden, match="not an approver"):
        decide(ERIN_P)  # erin approves step 2, not step 1
    with pytest.raises(Forbidden, match="not an approver"):
        decide(FRED, approvals=(approval("dana", DBA),))


def test_one_approval_per_approver_per_step() -> None:
    workflow = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA, 2),)),))
    with pytest.raises(Conflict, match="already approved this step"):
        decide(DANA, workflow, (approval("dana", DBA),))


def test_nothing_left_to_approve() -> None:
    with pytest.raises(Conflict, match="no approval step remains"):
        decide(ERIN_P, approvals=(approval("dana", DBA), approval("erin", ERIN, 1)))


# --- the selector rule -----------------------------------------------------------------------

BOTH = Workflow(steps=(ApprovalStep(approvers=(Approver(DBA), Approver(OPS))),))


def test_an_approver_matching_two_open_selectors_must_choose() -> None:
    with pytest.raises(Validation, match=r"ambiguous: .*role:dba, group:ops\. Specify 'selector'"):
        decide(OMAR, BOTH)
    assert decide(OMAR, BOTH, selector="group:ops").matched_selector == "group:ops"


def test_a_satisfied_selector_is_not_a_choice() -> None:
    satisfied = (approval("dana", DBA),)
    assert decide(OMAR, BOTH, satisfied).matched_selector == "group:ops"
    with pytest.raises(Conflict, match="already satisfied"):
        decide(OMAR, BOTH, satisfied, selector="role:dba")


def test_a_selector_the_approver_does_not_match_is_a_400() -> None:
    with pytest.raises(Validation, match="not one you match"):
        decide(DANA, BOTH, selector="group:ops")


def test_choose_selector_with_nothing_open() -> None:
    with pytest.raises(Conflict):
        choose_selector([DBA], [], None)


# --- rejecting, viewing, progress --------------------------------------------------------------


def test_rejection_takes_the_same_eligibility() -> None:
    assert rejection_selector(DANA, requester="alice", workflow=TWO_STEPS, approvals=()) == (
        0,
        "role:dba",
    )
    for who, requester in ((AGENT, "alice"), (DANA, "dana"), (ERIN_P, "alice")):
        with pytest.raises(Forbidden):
            rejection_selector(who, requester=requester, workflow=TWO_STEPS, approvals=())


def test_pending_approvers_follow_the_current_step() -> None:
    assert is_pending_approver(DANA, "alice", TWO_STEPS, [])
    assert not is_pending_approver(ERIN_P, "alice", TWO_STEPS, [])
    after_first = [approval("dana", DBA)]
    assert is_pending_approver(ERIN_P, "alice", TWO_STEPS, after_first)
    assert not is_pending_approver(DANA, "alice", TWO_STEPS, after_first)


def test_progress_lists_steps_approvals_and_who_may_still_approve() -> None:
    workflow = Workflow(
        steps=(
            ApprovalStep(approvers=(Approver(DBA, 2), Approver(OPS)), mode=StepMode.ANY),
            ApprovalStep(approvers=(Approver(ERIN),)),
        )
    )
    rows = [approval("dana", DBA)]
    progress = approval_progress(workflow, rows)
    assert (progress.current_step, progress.total_steps) == (0, 2)
    assert progress.awaiting == ("role:dba", "group:ops")
    first = progress.steps[0]
    assert (first.mode, first.satisfied, first.approvals) == (StepMode.ANY, False, tuple(rows))
    assert [(a.selector, a.min, a.current) for a in first.approvers_required] == [
        ("role:dba", 2, 1),
        ("group:ops", 1, 0),
    ]
    rows.append(approval("omar", OPS, seconds=1))
    progress = approval_progress(workflow, rows)
    assert (progress.current_step, progress.awaiting) == (1, ("user:erin",))
    assert progress.steps[0].satisfied and not progress.steps[1].satisfied
    rejected = approval_progress(
        workflow, [*rows, approval("erin", ERIN, 1, ApprovalAction.REJECT)]
    )
    assert rejected.awaiting == ()
    assert rejected.rejection is not None and rejected.rejection.actor_id == "erin"


def test_selectors_round_trip_as_recorded() -> None:
    assert parse_selector(decide(DANA).matched_selector) == DBA


def test_awaits_approval_from_follows_every_rule() -> None:
    assert awaits_approval_from(DANA, "alice", TWO_STEPS, [])
    assert awaits_approval_from(OMAR, "alice", BOTH, [])  # ambiguous, yet eligible
    assert not awaits_approval_from(DANA, "dana", TWO_STEPS, [])
    assert not awaits_approval_from(AGENT, "alice", TWO_STEPS, [])
    assert not awaits_approval_from(ERIN_P, "alice", TWO_STEPS, [])
    assert not awaits_approval_from(DANA, "alice", TWO_STEPS, [approval("dana", DBA)])
    assert not awaits_approval_from(DANA, "alice", BOTH, [approval("dana", DBA)])
