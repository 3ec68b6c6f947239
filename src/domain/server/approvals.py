"""Human approval of a pending request: where it stands and what one more approval does.

docs/server.md §2.4-§2.5. A request keeps the workflow it was created under (its
snapshot) and a list of approval rows; everything here is computed from those two, so
the approve and reject use cases, `GET /api/requests/{id}` (`approval_progress`) and the
`pending_for_me` list can never disagree about which step is current.

* Step i is satisfied when, counting its `approve` rows by `matched_selector`, every
  approver entry reaches its `min` (mode `all`) or one entry does (mode `any`).
* The current step is the first unsatisfied one; it equals the number of steps when all
  are satisfied. Steps run strictly in order: an approval always counts for the current
  step.
* An approver who matches several selectors of the current step names one with
  `selector`; without it the choice must be unambiguous among the selectors that still
  need approvals (`choose_selector`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.server.errors import Conflict, Forbidden, Validation
from domain.server.rbac import Principal, Selector, check_approvable, matched_selectors
from domain.server.workflows import ApprovalStep, StepMode, Workflow

__all__ = [
    "Approval",
    "ApprovalAction",
    "ApprovalOutcome",
    "ApprovalProgress",
    "ApproverProgress",
    "StepProgress",
    "approval_progress",
    "approved_steps_of",
    "awaits_approval_from",
    "choose_selector",
    "current_step",
    "current_step_selectors",
    "decide_approval",
    "is_pending_approver",
    "is_step_satisfied",
    "open_selectors",
    "rejection_selector",
]


class ApprovalAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class Approval:
    """One row of `approvals`: who acted on which step, through which selector, and why."""

    id: str
    request_id: str
    action: ApprovalAction
    actor_id: str
    step_index: int
    matched_selector: str | None
    comment: str | None
    created_at: datetime


def _approvals_of_step(approvals: Iterable[Approval], step_index: int) -> list[Approval]:
    return [
        a for a in approvals if a.action is ApprovalAction.APPROVE and a.step_index == step_index
    ]


def _counts(approvals: Iterable[Approval], step_index: int) -> Counter[str]:
    """Approvals of one step per matched selector."""
    return Counter(
        a.matched_selector for a in _approvals_of_step(approvals, step_index) if a.matched_selector
    )


def is_step_satisfied(step: ApprovalStep, step_index: int, approvals: Iterable[Approval]) -> bool:
    counts = _counts(approvals, step_index)
    reached = [counts[str(a.selector)] >= a.min for a in step.approvers]
    if not reached:
        return False
    return all(reached) if step.mode is StepMode.ALL else any(reached)


def current_step(workflow: Workflow, approvals: Sequence[Approval]) -> int:
    """The first unsatisfied step; `len(workflow.steps)` once every step is satisfied."""
    for index, step in enumerate(workflow.steps):
        if not is_step_satisfied(step, index, approvals):
            return index
    return len(workflow.steps)


def open_selectors(workflow: Workflow, approvals: Sequence[Approval]) -> tuple[Selector, ...]:
    """The current step's selectors that still need approvals: who may still approve it.

    Empty when every step is satisfied. In mode `any` every entry below its `min` is
    open (any of them completes the step).
    """
    index = current_step(workflow, approvals)
    if index >= len(workflow.steps):
        return ()
    counts = _counts(approvals, index)
    return tuple(
        a.selector for a in workflow.steps[index].approvers if counts[str(a.selector)] < a.min
    )


def approved_steps_of(approvals: Iterable[Approval], actor_id: str) -> frozenset[int]:
    """The steps `actor_id` approved (the cross-step rule looks at these)."""
    return frozenset(
        a.step_index
        for a in approvals
        if a.action is ApprovalAction.APPROVE and a.actor_id == actor_id
    )


def choose_selector(
    matched: Sequence[Selector], still_open: Sequence[Selector], requested: str | None
) -> str:
    """The selector an approval is recorded under (docs/server.md §2.4).

    `matched` are the current step's selectors the approver matches, `still_open` those of
    the step that still need approvals. With `requested`, it must be one the approver
    matches (else 400) and still open (else 409). Without it, exactly one matched selector
    must still be open: none is a 409 (nothing left to approve through), several a 400
    asking for `selector`.
    """
    matched_names = [str(s) for s in matched]
    open_names = {str(s) for s in still_open}
    if requested is not None:
        if requested not in matched_names:
            raise Validation(
                f"selector {requested!r} is not one you match in the current step; "
                f"you match: {', '.join(matched_names)}"
            )
        if requested not in open_names:
            raise Conflict(f"selector {requested} is already satisfied in the current step")
        return requested
    candidates = [name for name in matched_names if name in open_names]
    if not candidates:
        raise Conflict("every approver group you match is already satisfied in the current step")
    if len(candidates) > 1:
        raise Validation(
            "ambiguous: you match multiple unsatisfied approver groups: "
            f"{', '.join(candidates)}. Specify 'selector'"
        )
    return candidates[0]


@dataclass(frozen=True)
class ApprovalOutcome:
    """What one more approval does: the row to record and where the request then stands."""

    step_index: int
    matched_selector: str
    #: The approval satisfies its step.
    step_completed: bool
    #: ... and it was the last step: the request becomes `approved`.
    final: bool
    #: The current step after this approval (`total_steps` when final).
    next_step: int
    total_steps: int
    #: The selectors of the step now current (`request_pending_approvers`); empty when final.
    next_selectors: tuple[Selector, ...]


def decide_approval(
    principal: Principal,
    *,
    requester: str,
    workflow: Workflow,
    approvals: Sequence[Approval],
    requested_selector: str | None,
) -> ApprovalOutcome:
    """Check that `principal` may approve the current step now and say what follows.

    Raises Conflict when no step remains or the principal already approved this step,
    Forbidden when it is not eligible (§2.5), Validation/Conflict for the selector rule.
    The caller records the approval with the outcome's `step_index` and `matched_selector`.
    """
    total = len(workflow.steps)
    index = current_step(workflow, approvals)
    if index >= total:
        raise Conflict("no approval step remains")
    step = workflow.steps[index]
    matched = check_approvable(
        principal,
        requester=requester,
        step_selectors=step.selectors,
        current_step=index,
        approved_steps=approved_steps_of(approvals, principal.subject_id),
        allow_self_approve=workflow.allow_self_approve,
        allow_same_approver_across_steps=workflow.allow_same_approver_across_steps,
    )
    if index in approved_steps_of(approvals, principal.subject_id):
        raise Conflict("already approved this step")
    selector = choose_selector(matched, open_selectors(workflow, approvals), requested_selector)
    counted = Approval(
        id="",
        request_id="",
        action=ApprovalAction.APPROVE,
        actor_id=principal.subject_id,
        step_index=index,
        matched_selector=selector,
        comment=None,
        created_at=datetime.min,
    )
    after = (*approvals, counted)
    following = current_step(workflow, after)
    return ApprovalOutcome(
        step_index=index,
        matched_selector=selector,
        step_completed=following > index,
        final=following >= total,
        next_step=following,
        total_steps=total,
        next_selectors=() if following >= total else workflow.steps[following].selectors,
    )


def rejection_selector(
    principal: Principal,
    *,
    requester: str,
    workflow: Workflow,
    approvals: Sequence[Approval],
) -> tuple[int, str]:
    """(current step, the first selector it matches): a rejection needs the same
    eligibility as an approval of the current step (§2.4). Raises like `decide_approval`."""
    index = current_step(workflow, approvals)
    if index >= len(workflow.steps):
        raise Conflict("no approval step remains")
    matched = check_approvable(
        principal,
        requester=requester,
        step_selectors=workflow.steps[index].selectors,
        current_step=index,
        approved_steps=approved_steps_of(approvals, principal.subject_id),
        allow_self_approve=workflow.allow_self_approve,
        allow_same_approver_across_steps=workflow.allow_same_approver_across_steps,
    )
    return index, str(matched[0])


# --- progress, for GET /api/requests/{id} ---------------------------------------------------


@dataclass(frozen=True)
class ApproverProgress:
    selector: str
    min: int
    current: int


@dataclass(frozen=True)
class StepProgress:
    index: int
    mode: StepMode
    satisfied: bool
    approvers_required: tuple[ApproverProgress, ...]
    approvals: tuple[Approval, ...]


@dataclass(frozen=True)
class ApprovalProgress:
    """`approval_progress`: every step, who approved it, and who may still approve."""

    current_step: int
    total_steps: int
    steps: tuple[StepProgress, ...]
    #: The current step's selectors that still need approvals (empty once approved).
    awaiting: tuple[str, ...]
    #: A rejection, if any (its step, actor and comment).
    rejection: Approval | None


def approval_progress(workflow: Workflow, approvals: Sequence[Approval]) -> ApprovalProgress:
    steps = []
    for index, step in enumerate(workflow.steps):
        counts = _counts(approvals, index)
        steps.append(
            StepProgress(
                index=index,
                mode=step.mode,
                satisfied=is_step_satisfied(step, index, approvals),
                approvers_required=tuple(
                    ApproverProgress(str(a.selector), a.min, counts[str(a.selector)])
                    for a in step.approvers
                ),
                approvals=tuple(a for a in approvals if a.step_index == index),
            )
        )
    rejection = next((a for a in approvals if a.action is ApprovalAction.REJECT), None)
    return ApprovalProgress(
        current_step=current_step(workflow, approvals),
        total_steps=len(workflow.steps),
        steps=tuple(steps),
        awaiting=()
        if rejection is not None
        else tuple(str(s) for s in open_selectors(workflow, approvals)),
        rejection=rejection,
    )


def current_step_selectors(
    workflow: Workflow, approvals: Sequence[Approval]
) -> tuple[Selector, ...]:
    """Every selector of the current step (who may see the request while it waits)."""
    index = current_step(workflow, approvals)
    if index >= len(workflow.steps):
        return ()
    return workflow.steps[index].selectors


def is_pending_approver(
    principal: Principal, requester: str, workflow: Workflow, approvals: Sequence[Approval]
) -> bool:
    """Whether `principal` matches a selector of the current step (view rights, §4.4)."""
    return bool(
        matched_selectors(principal, current_step_selectors(workflow, approvals), requester)
    )


def awaits_approval_from(
    principal: Principal, requester: str, workflow: Workflow, approvals: Sequence[Approval]
) -> bool:
    """Whether an approval by `principal` would be accepted now (`pending_for_me`).

    The same rules as `decide_approval`, selector choice included: an approver whose every
    matching selector is already satisfied has nothing left to approve.
    """
    try:
        decide_approval(
            principal,
            requester=requester,
            workflow=workflow,
            approvals=approvals,
            requested_selector=None,
        )
    except Validation:
        return True  # several open selectors: eligible, it only has to name one
    except (Conflict, Forbidden):
        return False
    return True
