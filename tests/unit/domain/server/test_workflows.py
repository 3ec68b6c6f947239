"""Workflows: stable ids, deterministic matching, auto-approve evaluation and every
validation rule of docs/server.md §2.1 (errors and warnings)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from domain.server.rbac import Selector, SelectorKind, check_approvable
from domain.server.workflows import (
    ApprovalStep,
    Approver,
    AutoApprove,
    AutoApproved,
    AutoApproveMode,
    DecisionReason,
    NeedsApproval,
    RiskLevel,
    StepMode,
    ValidationProblem,
    Workflow,
    evaluate,
    format_key,
    match_workflow,
    validate_workflow,
    validate_workflows,
    workflow_id,
)
from domain.shared.operations import Operation

SELECT = Operation.EXECUTE_SELECT
DML = Operation.EXECUTE_DML
UP = Operation.MIGRATE_UP


def role(name: str, min: int = 1) -> Approver:
    return Approver(Selector(SelectorKind.ROLE, name), min)


def group(name: str, min: int = 1) -> Approver:
    return Approver(Selector(SelectorKind.GROUP, name), min)


def user(name: str, min: int = 1) -> Approver:
    return Approver(Selector(SelectorKind.USER, name), min)


def step(*approvers: Approver, mode: StepMode = StepMode.ALL) -> ApprovalStep:
    return ApprovalStep(tuple(approvers), mode)


DBA = (step(role("dba")),)
ALWAYS = AutoApprove(AutoApproveMode.ALWAYS)


def wf(
    database: str = "*",
    environment: str = "*",
    operations: tuple[Operation, ...] = (),
    steps: tuple[ApprovalStep, ...] = DBA,
    **kwargs: Any,
) -> Workflow:
    return Workflow(database, environment, operations, steps=steps, **kwargs)


def risk_based(threshold: RiskLevel | None = RiskLevel.LOW) -> AutoApprove:
    return AutoApprove(AutoApproveMode.RISK_BASED, risk=threshold)


def errors(workflows: list[Workflow]) -> list[str]:
    return [str(p) for p in validate_workflows(workflows).errors]


def warnings(workflows: list[Workflow]) -> list[str]:
    return [str(p) for p in validate_workflows(workflows).warnings]


# --- the workflow itself ---------------------------------------------------------------------


class TestWorkflow:
    def test_defaults_follow_the_spec(self) -> None:
        workflow = Workflow()
        assert (workflow.database, workflow.environment, workflow.operations) == ("*", "*", ())
        assert workflow.require_reason is False
        assert workflow.allow_self_approve is False
        assert workflow.allow_same_approver_across_steps is False
        assert workflow.explain is True
        assert workflow.pending_ttl_secs is None
        assert workflow.approved_ttl_secs is None
        assert workflow.statement_timeout_secs is None
        assert workflow.auto_approve is None
        assert workflow.steps == ()
        assert workflow.is_catch_all

    def test_auto_approve_defaults(self) -> None:
        rule = AutoApprove(AutoApproveMode.RISK_BASED, RiskLevel.LOW)
        assert (rule.allow_read_only, rule.allow_safe_ddl, rule.max_estimated_rows) == (
            True,
            True,
            1000,
        )

    def test_stable_id_hashes_the_sorted_operations(self) -> None:
        digest = hashlib.sha256(b"execute_dml,migrate_up").hexdigest()[:12]
        assert wf("app", "production", (UP, DML)).id == f"wf:app:production:{digest}"
        assert wf("app", "production", (DML, UP)).id == wf("app", "production", (UP, DML)).id

    def test_catch_all_id_hashes_the_empty_string(self) -> None:
        assert workflow_id("*", "*", ()) == "wf:*:*:e3b0c44298fc"

    def test_step_selectors_feed_rbac_approval_checks(self) -> None:
        approval = step(role("dba"), user("alice"))
        assert [str(s) for s in approval.selectors] == ["role:dba", "user:alice"]
        assert approval.approvers[0].kind is SelectorKind.ROLE
        assert approval.approvers[0].name == "dba"
        assert callable(check_approvable)  # rbac takes these selectors as step_selectors


# --- matching -----------------------------------------------------------------------------


class TestMatching:
    def test_no_match_is_none(self) -> None:
        assert match_workflow([wf("app", "production")], "app", "staging", SELECT) is None
        assert match_workflow([wf(operations=(DML,))], "app", "production", SELECT) is None
        assert match_workflow([], "app", "production", SELECT) is None

    def test_scores(self) -> None:
        assert wf().score("app", "prod", SELECT) == 0
        assert wf("app").score("app", "prod", SELECT) == 2
        assert wf(environment="prod").score("app", "prod", SELECT) == 4
        assert wf("app", "prod").score("app", "prod", SELECT) == 6
        assert wf("app", "prod", (SELECT,)).score("app", "prod", SELECT) == 7
        assert wf("other").score("app", "prod", SELECT) is None

    def test_environment_outranks_database(self) -> None:
        by_db = wf("app", "*", (SELECT,))
        by_env = wf("*", "production")
        assert match_workflow([by_db, by_env], "app", "production", SELECT) is by_env
        assert match_workflow([by_env, by_db], "app", "production", SELECT) is by_env

    def test_listed_operation_outranks_a_catch_all_of_the_same_scope_weight(self) -> None:
        generic = wf("app", "*")
        specific = wf("app", "*", (DML,))
        assert match_workflow([generic, specific], "app", "production", DML) is specific
        assert match_workflow([generic, specific], "app", "production", SELECT) is generic

    def test_exact_scope_wins_over_everything(self) -> None:
        candidates = [wf(), wf("app"), wf(environment="production"), wf("app", "production")]
        for order in (candidates, candidates[::-1]):
            assert match_workflow(order, "app", "production", UP) is candidates[3]

    def test_order_never_matters_on_a_validated_list(self) -> None:
        workflows = [
            wf(),
            wf("app", operations=(DML,)),
            wf(environment="production", operations=(SELECT,)),
            wf("app", "production", (UP,)),
        ]
        assert errors(workflows) == []
        for op in Operation:
            assert match_workflow(workflows, "app", "production", op) is match_workflow(
                workflows[::-1], "app", "production", op
            )

    def test_unvalidated_ties_go_to_the_first(self) -> None:
        first, second = wf("app", "production"), wf("app", "production", explain=False)
        assert match_workflow([first, second], "app", "production", DML) is first


# --- evaluation ---------------------------------------------------------------------------


class TestEvaluate:
    def test_no_rule_needs_approval(self) -> None:
        assert evaluate(wf(), RiskLevel.LOW) == NeedsApproval(DecisionReason.NO_AUTO_APPROVE_RULE)

    @pytest.mark.parametrize("risk", [*RiskLevel, None])
    def test_always_approves_everything(self, risk: RiskLevel | None) -> None:
        workflow = wf(steps=(), auto_approve=ALWAYS)
        assert evaluate(workflow, risk) == AutoApproved(DecisionReason.EXPLICIT_ALWAYS)

    @pytest.mark.parametrize(
        ("threshold", "risk", "approved"),
        [
            (RiskLevel.LOW, RiskLevel.LOW, True),
            (RiskLevel.LOW, RiskLevel.MEDIUM, False),
            (RiskLevel.MEDIUM, RiskLevel.LOW, True),
            (RiskLevel.MEDIUM, RiskLevel.MEDIUM, True),
            (RiskLevel.MEDIUM, RiskLevel.HIGH, False),
            (RiskLevel.HIGH, RiskLevel.HIGH, True),
            (RiskLevel.HIGH, RiskLevel.CRITICAL, False),
        ],
    )
    def test_risk_based_threshold_is_inclusive(
        self, threshold: RiskLevel, risk: RiskLevel, approved: bool
    ) -> None:
        decision = evaluate(wf(auto_approve=risk_based(threshold)), risk)
        if approved:
            assert decision == AutoApproved(DecisionReason.RISK_BELOW_THRESHOLD)
        else:
            assert decision == NeedsApproval(DecisionReason.RISK_ABOVE_THRESHOLD)

    @pytest.mark.parametrize("risk", [RiskLevel.UNKNOWN, RiskLevel.UNAVAILABLE, None])
    def test_unassessed_risk_never_auto_approves(self, risk: RiskLevel | None) -> None:
        decision = evaluate(wf(auto_approve=risk_based(RiskLevel.HIGH)), risk)
        assert decision == NeedsApproval(DecisionReason.RISK_UNAVAILABLE)

    def test_risk_order(self) -> None:
        assert [level.rank for level in RiskLevel] == list(range(6))
        assert not RiskLevel.UNKNOWN.is_known
        assert RiskLevel.CRITICAL.is_known


# --- validation: one workflow ------------------------------------------------------------------


class TestValidateOneWorkflow:
    def test_a_good_workflow_passes(self) -> None:
        result = validate_workflow(wf("app", "production", (DML,), auto_approve=risk_based()))
        assert result.ok
        assert result.errors == result.warnings == ()

    def test_needs_auto_approve_or_steps(self) -> None:
        assert errors([wf(steps=())]) == [
            "workflows[0]: needs auto_approve, steps, or both; add [workflows.auto_approve] "
            "or [[workflows.steps]] with approvers"
        ]

    def test_always_with_steps_is_unreachable(self) -> None:
        assert errors([wf(auto_approve=ALWAYS)]) == [
            'workflows[0].steps: unreachable: auto_approve mode "always" approves every '
            'request before any step; remove the steps or use mode "risk_based"'
        ]

    def test_risk_based_needs_steps(self) -> None:
        assert errors([wf(steps=(), auto_approve=risk_based())]) == [
            'workflows[0].auto_approve: mode "risk_based" needs [[workflows.steps]] for the '
            "requests above the risk threshold (they would have no way to be approved); add "
            'steps or use mode "always"'
        ]

    def test_risk_based_needs_a_threshold(self) -> None:
        assert errors([wf(auto_approve=risk_based(None))]) == [
            'workflows[0].auto_approve.risk: required for mode "risk_based": low, medium or high'
        ]

    @pytest.mark.parametrize(
        "level", [RiskLevel.CRITICAL, RiskLevel.UNKNOWN, RiskLevel.UNAVAILABLE]
    )
    def test_threshold_is_low_medium_or_high(self, level: RiskLevel) -> None:
        assert errors([wf(auto_approve=risk_based(level))]) == [
            f"workflows[0].auto_approve.risk: must be low, medium or high, got {level}"
        ]

    def test_max_estimated_rows_not_negative(self) -> None:
        rule = AutoApprove(AutoApproveMode.RISK_BASED, RiskLevel.LOW, max_estimated_rows=-1)
        assert errors([wf(auto_approve=rule)]) == [
            "workflows[0].auto_approve.max_estimated_rows: must be at least 0, got -1"
        ]

    def test_empty_approvers(self) -> None:
        assert errors([wf(steps=(step(),))]) == [
            "workflows[0].steps[0].approvers: no approvers; add [[workflows.steps.approvers]] "
            "with role, group or user"
        ]

    @pytest.mark.parametrize("minimum", [0, -1])
    def test_min_at_least_one(self, minimum: int) -> None:
        assert errors([wf(steps=(step(role("dba", minimum)),))]) == [
            f"workflows[0].steps[0].approvers[0].min: must be at least 1, got {minimum}"
        ]

    def test_user_approver_min_is_one(self) -> None:
        assert errors([wf(steps=(step(user("alice", 2)),))]) == [
            "workflows[0].steps[0].approvers[0].min: a user approves once, so min must be 1, "
            "got 2; use a role or group to require several approvals"
        ]

    def test_role_and_group_may_need_several(self) -> None:
        assert errors([wf(steps=(step(role("dba", 2), group("sre", 3)),))]) == []

    def test_requester_is_not_an_approver(self) -> None:
        requester = Approver(Selector(SelectorKind.REQUESTER))
        assert errors([wf(steps=(step(requester),))]) == [
            "workflows[0].steps[0].approvers[0]: the requester cannot be an approver; name a "
            "role, group or user (allow_self_approve = true lets a requester who also matches "
            "one approve)"
        ]

    def test_empty_approver_name(self) -> None:
        assert errors([wf(steps=(step(role("")),))]) == [
            "workflows[0].steps[0].approvers[0].role: must not be empty"
        ]

    def test_same_user_across_steps_deadlocks(self) -> None:
        workflow = wf(steps=(step(user("alice")), step(role("dba"), user("alice"))))
        assert errors([workflow]) == [
            "workflows[0].steps[1].approvers[1].user: user:alice already approves steps[0] and "
            "allow_same_approver_across_steps = false, so this step could never be approved; "
            "name another approver or set allow_same_approver_across_steps = true"
        ]

    def test_same_user_across_steps_allowed_when_configured(self) -> None:
        workflow = wf(
            steps=(step(user("alice")), step(user("alice"))),
            allow_same_approver_across_steps=True,
        )
        assert errors([workflow]) == []
        assert warnings([workflow]) == []  # asked for explicitly: nothing to warn about

    def test_role_repeated_with_same_approver_allowed_warns_differently(self) -> None:
        workflow = wf(
            steps=(step(role("dba")), step(role("dba"))),
            allow_same_approver_across_steps=True,
        )
        assert warnings([workflow]) == [
            "workflows[0].steps[1].approvers[0]: role:dba also approves steps[0]; one member "
            "may approve both steps (allow_same_approver_across_steps = true)"
        ]

    def test_role_repeated_across_steps_is_a_warning(self) -> None:
        workflow = wf(steps=(step(role("dba")), step(group("sre")), step(role("dba"))))
        assert errors([workflow]) == []
        assert warnings([workflow]) == [
            "workflows[0].steps[2].approvers[0]: role:dba also approves steps[0]; this step "
            "needs a different member of role dba than steps[0]"
        ]

    def test_duplicate_selector_in_a_step_is_a_warning(self) -> None:
        workflow = wf(steps=(step(role("dba"), role("dba", 2)),))
        assert errors([workflow]) == []
        assert warnings([workflow]) == [
            "workflows[0].steps[0].approvers[1]: role:dba is listed twice in this step"
        ]

    def test_names_are_checked(self) -> None:
        assert errors([wf("App", "prod env")]) == [
            "workflows[0].database: invalid database name 'App': use 1-63 characters of a-z, "
            "0-9, '_' or '-', starting with a letter, or \"*\" for any",
            "workflows[0].environment: invalid environment name 'prod env': use 1-63 "
            "characters of a-z, 0-9, '_' or '-', starting with a letter, or \"*\" for any",
        ]

    def test_operation_listed_twice(self) -> None:
        assert errors([wf(operations=(DML, SELECT, DML))]) == [
            "workflows[0].operations[2]: execute_dml is listed twice; remove the duplicate"
        ]

    @pytest.mark.parametrize(
        "field", ["pending_ttl_secs", "approved_ttl_secs", "statement_timeout_secs"]
    )
    def test_durations_positive(self, field: str) -> None:
        zero: dict[str, Any] = {field: 0}
        assert errors([replace(wf(), **zero)]) == [
            f"workflows[0].{field}: must be at least 1, got 0"
        ]

    def test_key_prefix_is_the_caller_s(self) -> None:
        result = validate_workflow(wf(steps=()), ("custom", 3))
        assert [format_key(p.key) for p in result.errors] == ["custom[3]"]


# --- validation: overlaps (deterministic matching, §11.10) -----------------------------------


class TestOverlaps:
    def test_two_catch_alls_in_one_scope(self) -> None:
        assert errors([wf("app", "production"), wf("app", "production")]) == [
            "workflows[1]: workflows[0] is already the catch-all (no operations) for database "
            "'app', environment 'production'; merge the two or give each an operations list"
        ]

    def test_catch_all_next_to_specific(self) -> None:
        workflows = [
            wf("app", "production", (DML,)),
            wf("app", "production"),
            wf("app", "production", (UP,)),
        ]
        assert errors(workflows) == [
            "workflows[1]: a catch-all workflow (no operations) cannot share database 'app', "
            "environment 'production' with workflows that list operations (workflows[0], "
            "workflows[2]); give it an explicit operations list"
        ]

    def test_same_operation_twice_in_one_scope(self) -> None:
        workflows = [wf("app", "production", (DML, UP)), wf("app", "production", (SELECT, UP))]
        assert errors(workflows) == [
            "workflows[1].operations[1]: migrate_up for database 'app', environment "
            "'production' is already covered by workflows[0]; each operation may appear in one "
            "workflow per scope"
        ]

    def test_wildcards_are_scopes_of_their_own(self) -> None:
        workflows = [wf(), wf("app"), wf(environment="production"), wf("app", "production")]
        assert errors(workflows) == []

    def test_same_operation_in_different_scopes_is_fine(self) -> None:
        workflows = [wf("app", "production", (DML,)), wf("app", "*", (DML,)), wf(operations=(DML,))]
        assert errors(workflows) == []

    def test_every_problem_is_reported_together(self) -> None:
        workflows = [wf(steps=()), wf("app", "production"), wf("app", "production")]
        assert len(errors(workflows)) == 2


def test_problem_renders_key_and_message() -> None:
    assert (
        str(ValidationProblem(("workflows", 0, "steps", 1), "bad")) == "workflows[0].steps[1]: bad"
    )
    assert str(ValidationProblem((), "bad")) == "bad"
