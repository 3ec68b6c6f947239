"""Approval workflows: which workflow governs a request, and whether it is auto-approved.

docs/server.md §2.1-§2.3. A workflow covers a (database, environment) scope, `*` meaning
any, and a list of operations, empty meaning all. For a request the most specific
workflow wins: score 4 when its environment is exact, 2 when its database is exact, 1 when
it lists the operation.

Matching is deterministic (§11.10). Two workflows of *different* scopes can never score
the same for one request (the scope part of the score is 0, 2, 4 or 6 and the operation
bit is 1), so a tie can only come from the same (database, environment): two catch-alls,
or the same operation listed twice. `validate_workflows` rejects both, plus, as the
reference does, a catch-all next to workflows that list operations. On a list that passed
validation every match is unique; on one that did not, the first of equal scores wins.

Our additions over dbward 0.2: `approved_ttl_secs` (§11.3, the approved-state TTL,
separate from `pending_ttl_secs`) and a *wired* `statement_timeout_secs`: it replaces the
execution policy's `statement_timeout_secs` for the queries this workflow matches
(execute_select, execute_dml, migrate_status), capped by the policy's
`max_statement_timeout_secs`; migrations keep `migration_statement_timeout_secs` (see
`domain.server.execution_policies.effective_statement_timeout`).

Validation speaks the config file's words: each problem carries the TOML key path
(`workflows[1].steps[0].approvers[2].min`) so the config loader can name file and key.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from domain.server.rbac import Selector, SelectorKind
from domain.shared.operations import Operation
from domain.shared.scopes import InvalidScopeNameError, validate_scope_name

__all__ = [
    "AUTO_APPROVE_THRESHOLDS",
    "WILDCARD",
    "ApprovalStep",
    "Approver",
    "AutoApprove",
    "AutoApproveMode",
    "AutoApproved",
    "Decision",
    "DecisionReason",
    "KeyPath",
    "NeedsApproval",
    "RiskLevel",
    "StepMode",
    "ValidationProblem",
    "Workflow",
    "WorkflowValidation",
    "evaluate",
    "format_key",
    "match_workflow",
    "scope_name_problem",
    "validate_workflow",
    "validate_workflows",
    "workflow_id",
]

#: The scope wildcard: any database, or any environment.
WILDCARD = "*"

#: Where a value sits in the config file: table keys and array indexes.
KeyPath = tuple[str | int, ...]


# --- risk and auto-approval -------------------------------------------------------------


class RiskLevel(StrEnum):
    """Risk of a request (§5.6), in increasing order; the last two mean "not assessed"."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"

    @property
    def is_known(self) -> bool:
        """False for unknown/unavailable: such a risk never auto-approves."""
        return self not in (RiskLevel.UNKNOWN, RiskLevel.UNAVAILABLE)

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)


_RISK_ORDER = tuple(RiskLevel)
#: The thresholds a `risk_based` rule may use.
AUTO_APPROVE_THRESHOLDS = (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)


class AutoApproveMode(StrEnum):
    ALWAYS = "always"
    RISK_BASED = "risk_based"


@dataclass(frozen=True)
class AutoApprove:
    """`[workflows.auto_approve]`. The risk fields matter for `risk_based` only.

    The other three are inputs to risk scoring (docs/sql-safety.md §4): with
    `allow_read_only` a read-only SELECT scores low, with `allow_safe_ddl` one safe DDL
    statement without findings scores low, and a table above `max_estimated_rows` raises
    the risk to at least medium.
    """

    mode: AutoApproveMode
    risk: RiskLevel | None = None
    allow_read_only: bool = True
    allow_safe_ddl: bool = True
    max_estimated_rows: int = 1000


# --- approvers and steps ----------------------------------------------------------------


class StepMode(StrEnum):
    ALL = "all"  # every approver entry reaches its min
    ANY = "any"  # one approver entry reaching its min is enough


@dataclass(frozen=True)
class Approver:
    """One `[[workflows.steps.approvers]]` entry: a selector and how many approvals it needs.

    `str(selector)` (`role:dba`) is what an approval records as `matched_selector`.
    """

    selector: Selector
    min: int = 1

    @property
    def kind(self) -> SelectorKind:
        return self.selector.kind

    @property
    def name(self) -> str:
        return self.selector.name


@dataclass(frozen=True)
class ApprovalStep:
    approvers: tuple[Approver, ...]
    mode: StepMode = StepMode.ALL

    @property
    def selectors(self) -> tuple[Selector, ...]:
        """For `domain.server.rbac.check_approvable(step_selectors=...)`."""
        return tuple(approver.selector for approver in self.approvers)


# --- workflows ---------------------------------------------------------------------------


def workflow_id(database: str, environment: str, operations: Iterable[Operation]) -> str:
    """The stable id `wf:{db}:{env}:{sha256(sorted ops joined ",")[:12]}` (§2.1)."""
    joined = ",".join(sorted(op.value for op in operations))
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:12]
    return f"wf:{database}:{environment}:{digest}"


@dataclass(frozen=True)
class Workflow:
    """One `[[workflows]]` entry (§2.1), with our two additions documented in the module."""

    database: str = WILDCARD
    environment: str = WILDCARD
    #: Empty = every operation (a catch-all).
    operations: tuple[Operation, ...] = ()
    require_reason: bool = False
    allow_self_approve: bool = False
    allow_same_approver_across_steps: bool = False
    #: Run an EXPLAIN dry-run on create, for the approvers' context.
    explain: bool = True
    #: None = `[retention].pending_ttl_secs`.
    pending_ttl_secs: int | None = None
    #: Ours (§11.3). None = `[retention].approved_ttl_secs`.
    approved_ttl_secs: int | None = None
    #: Ours, wired: replaces the execution policy's statement_timeout_secs for queries
    #: (execute_select, execute_dml, migrate_status) this workflow matches, still capped
    #: by the policy's max_statement_timeout_secs. Migrations keep the policy's
    #: migration_statement_timeout_secs.
    statement_timeout_secs: int | None = None
    auto_approve: AutoApprove | None = None
    steps: tuple[ApprovalStep, ...] = ()

    @property
    def id(self) -> str:
        return workflow_id(self.database, self.environment, self.operations)

    @property
    def is_catch_all(self) -> bool:
        return not self.operations

    def score(self, database: str, environment: str, operation: Operation) -> int | None:
        """How specifically this workflow covers the request; None when it does not cover it."""
        if self.operations and operation not in self.operations:
            return None
        if self.database not in (WILDCARD, database):
            return None
        if self.environment not in (WILDCARD, environment):
            return None
        return (
            (4 if self.environment != WILDCARD else 0)
            + (2 if self.database != WILDCARD else 0)
            + (1 if self.operations else 0)
        )


def match_workflow(
    workflows: Sequence[Workflow], database: str, environment: str, operation: Operation
) -> Workflow | None:
    """The most specific workflow for a request, or None (the request is then refused).

    Deterministic: on a validated list there is never a tie; otherwise the first of the
    highest scores wins (dbward 0.2 took the last).
    """
    best: Workflow | None = None
    best_score = -1
    for workflow in workflows:
        score = workflow.score(database, environment, operation)
        if score is not None and score > best_score:
            best, best_score = workflow, score
    return best


# --- evaluation ---------------------------------------------------------------------------


class DecisionReason(StrEnum):
    """The `decision.reasons` strings of `decision_trace_json` (§1.3)."""

    EXPLICIT_ALWAYS = "explicit_always"
    RISK_BELOW_THRESHOLD = "risk_below_threshold"
    NO_AUTO_APPROVE_RULE = "no_auto_approve_rule"
    RISK_UNAVAILABLE = "risk_unavailable"
    RISK_ABOVE_THRESHOLD = "risk_above_threshold"


@dataclass(frozen=True)
class AutoApproved:
    reason: DecisionReason


@dataclass(frozen=True)
class NeedsApproval:
    reason: DecisionReason


Decision = AutoApproved | NeedsApproval


def evaluate(workflow: Workflow, risk: RiskLevel | None) -> Decision:
    """Auto-approve or not (§2.3). `risk` is None for migrations, which are not assessed.

    `always` approves everything. `risk_based` approves a *known* risk at or below the
    threshold; unknown, unavailable or no risk (migrations) always needs approval.
    """
    rule = workflow.auto_approve
    if rule is None:
        return NeedsApproval(DecisionReason.NO_AUTO_APPROVE_RULE)
    if rule.mode is AutoApproveMode.ALWAYS:
        return AutoApproved(DecisionReason.EXPLICIT_ALWAYS)
    if risk is None or not risk.is_known or rule.risk is None:
        return NeedsApproval(DecisionReason.RISK_UNAVAILABLE)
    if risk.rank <= rule.risk.rank:
        return AutoApproved(DecisionReason.RISK_BELOW_THRESHOLD)
    return NeedsApproval(DecisionReason.RISK_ABOVE_THRESHOLD)


# --- validation ---------------------------------------------------------------------------


def format_key(key: KeyPath) -> str:
    """`workflows[0].steps[1].approvers[0].min`."""
    text = ""
    for part in key:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class ValidationProblem:
    """One problem at one config key; the message says what is wrong and how to fix it."""

    key: KeyPath
    message: str

    def __str__(self) -> str:
        return f"{format_key(self.key)}: {self.message}" if self.key else self.message


@dataclass(frozen=True)
class WorkflowValidation:
    """Errors stop the server from starting; warnings are logged."""

    errors: tuple[ValidationProblem, ...] = ()
    warnings: tuple[ValidationProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def scope_name_problem(kind: str, name: str, *, wildcard: bool = True) -> str | None:
    """What is wrong with a database/environment name (`*` allowed when `wildcard`), or None."""
    if wildcard and name == WILDCARD:
        return None
    try:
        validate_scope_name(kind, name)
    except InvalidScopeNameError as error:
        return str(error) + (', or "*" for any' if wildcard else "")
    return None


#: Records one error at a key relative to the workflow.
_Report = Callable[[KeyPath, str], None]


def _at_least(value: int | None, minimum: int) -> str | None:
    if value is not None and value < minimum:
        return f"must be at least {minimum}, got {value}"
    return None


def validate_workflow(workflow: Workflow, key: KeyPath = ()) -> WorkflowValidation:
    """The rules of §2.1 that concern one workflow; `key` prefixes every problem's key."""
    errors: list[ValidationProblem] = []
    warnings: list[ValidationProblem] = []

    def error(where: KeyPath, message: str) -> None:
        errors.append(ValidationProblem((*key, *where), message))

    for field, kind in (("database", "database"), ("environment", "environment")):
        problem = scope_name_problem(kind, getattr(workflow, field))
        if problem:
            error((field,), problem)
    seen: set[Operation] = set()
    for index, op in enumerate(workflow.operations):
        if op in seen:
            error(("operations", index), f"{op} is listed twice; remove the duplicate")
        seen.add(op)
    for field in ("pending_ttl_secs", "approved_ttl_secs", "statement_timeout_secs"):
        problem = _at_least(getattr(workflow, field), 1)
        if problem:
            error((field,), problem)

    rule = workflow.auto_approve
    if rule is None and not workflow.steps:
        error(
            (),
            "needs auto_approve, steps, or both; add [workflows.auto_approve] or "
            "[[workflows.steps]] with approvers",
        )
    if rule is not None:
        _validate_auto_approve(rule, workflow, error)
    for index, step in enumerate(workflow.steps):
        _validate_step(workflow, index, step, key, errors, warnings)
    return WorkflowValidation(tuple(errors), tuple(warnings))


def _validate_auto_approve(rule: AutoApprove, workflow: Workflow, error: _Report) -> None:
    if rule.mode is AutoApproveMode.ALWAYS and workflow.steps:
        error(
            ("steps",),
            'unreachable: auto_approve mode "always" approves every request before any step; '
            'remove the steps or use mode "risk_based"',
        )
    if rule.mode is AutoApproveMode.RISK_BASED:
        if not workflow.steps:
            error(
                ("auto_approve",),
                'mode "risk_based" needs [[workflows.steps]] for the requests above the risk '
                'threshold (they would have no way to be approved); add steps or use mode "always"',
            )
        if rule.risk is None:
            error(("auto_approve", "risk"), 'required for mode "risk_based": low, medium or high')
        elif rule.risk not in AUTO_APPROVE_THRESHOLDS:
            error(("auto_approve", "risk"), f"must be low, medium or high, got {rule.risk}")
    problem = _at_least(rule.max_estimated_rows, 0)
    if problem:
        error(("auto_approve", "max_estimated_rows"), problem)


def _validate_step(
    workflow: Workflow,
    index: int,
    step: ApprovalStep,
    key: KeyPath,
    errors: list[ValidationProblem],
    warnings: list[ValidationProblem],
) -> None:
    step_key: KeyPath = (*key, "steps", index)
    if not step.approvers:
        errors.append(
            ValidationProblem(
                (*step_key, "approvers"),
                "no approvers; add [[workflows.steps.approvers]] with role, group or user",
            )
        )
    in_step: set[str] = set()
    for position, approver in enumerate(step.approvers):
        where: KeyPath = (*step_key, "approvers", position)
        kind = approver.selector.kind
        if kind is SelectorKind.REQUESTER:
            errors.append(
                ValidationProblem(
                    where,
                    "the requester cannot be an approver; name a role, group or user "
                    "(allow_self_approve = true lets a requester who also matches one approve)",
                )
            )
            continue
        if not approver.selector.name:
            errors.append(ValidationProblem((*where, kind.value), "must not be empty"))
        if approver.min < 1:
            errors.append(
                ValidationProblem((*where, "min"), f"must be at least 1, got {approver.min}")
            )
        elif kind is SelectorKind.USER and approver.min > 1:
            errors.append(
                ValidationProblem(
                    (*where, "min"),
                    f"a user approves once, so min must be 1, got {approver.min}; "
                    "use a role or group to require several approvals",
                )
            )
        selector = str(approver.selector)
        if selector in in_step:
            warnings.append(ValidationProblem(where, f"{selector} is listed twice in this step"))
        in_step.add(selector)
        earlier = _earlier_step_with(workflow, index, selector)
        if earlier is None:
            continue
        if kind is SelectorKind.USER:
            if not workflow.allow_same_approver_across_steps:
                errors.append(
                    ValidationProblem(
                        (*where, "user"),
                        f"{selector} already approves steps[{earlier}] and "
                        "allow_same_approver_across_steps = false, so this step could never "
                        "be approved; name another approver or set "
                        "allow_same_approver_across_steps = true",
                    )
                )
        elif workflow.allow_same_approver_across_steps:
            warnings.append(
                ValidationProblem(
                    where,
                    f"{selector} also approves steps[{earlier}]; one member may approve both "
                    "steps (allow_same_approver_across_steps = true)",
                )
            )
        else:
            warnings.append(
                ValidationProblem(
                    where,
                    f"{selector} also approves steps[{earlier}]; this step needs a different "
                    f"member of {kind} {approver.selector.name} than steps[{earlier}]",
                )
            )


def _earlier_step_with(workflow: Workflow, index: int, selector: str) -> int | None:
    for earlier in range(index):
        if any(str(a.selector) == selector for a in workflow.steps[earlier].approvers):
            return earlier
    return None


def validate_workflows(
    workflows: Sequence[Workflow], key: KeyPath = ("workflows",)
) -> WorkflowValidation:
    """Every rule of §2.1 over a whole `[[workflows]]` list, overlaps included.

    Keys are `workflows[i]...` (with the default `key`), and messages name other entries
    the same way, so the config loader can report them as they are in the file.
    """
    errors: list[ValidationProblem] = []
    warnings: list[ValidationProblem] = []
    for index, workflow in enumerate(workflows):
        result = validate_workflow(workflow, (*key, index))
        errors.extend(result.errors)
        warnings.extend(result.warnings)
    errors.extend(_overlaps(workflows, key))
    return WorkflowValidation(tuple(errors), tuple(warnings))


def _overlaps(workflows: Sequence[Workflow], key: KeyPath) -> list[ValidationProblem]:
    """Within one (database, environment): one catch-all alone, or each operation once."""
    problems: list[ValidationProblem] = []
    by_scope: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, workflow in enumerate(workflows):
        by_scope[(workflow.database, workflow.environment)].append(index)
    name = format_key(key)
    for (database, environment), indexes in by_scope.items():
        scope = f"database {database!r}, environment {environment!r}"
        catch_alls = [i for i in indexes if workflows[i].is_catch_all]
        specific = [i for i in indexes if not workflows[i].is_catch_all]
        for later in catch_alls[1:]:
            problems.append(
                ValidationProblem(
                    (*key, later),
                    f"{name}[{catch_alls[0]}] is already the catch-all (no operations) for "
                    f"{scope}; merge the two or give each an operations list",
                )
            )
        if catch_alls and specific:
            listed = ", ".join(f"{name}[{i}]" for i in specific)
            problems.append(
                ValidationProblem(
                    (*key, catch_alls[0]),
                    f"a catch-all workflow (no operations) cannot share {scope} with "
                    f"workflows that list operations ({listed}); give it an explicit "
                    "operations list",
                )
            )
        owner: dict[Operation, int] = {}
        for index in specific:
            for position, op in enumerate(workflows[index].operations):
                first = owner.setdefault(op, index)
                if first != index:
                    problems.append(
                        ValidationProblem(
                            (*key, index, "operations", position),
                            f"{op} for {scope} is already covered by {name}[{first}]; "
                            "each operation may appear in one workflow per scope",
                        )
                    )
    return problems
