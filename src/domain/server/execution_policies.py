"""Execution and result policies: how a dispatched request may run, and what its result keeps.

docs/server.md §3.1-§3.2. Policies are matched by specificity: environment exact = 2,
database exact = 1, the highest wins and ties go to the first. Two different scopes never
tie for one request ((db, env) 3, (*, env) 2, (db, *) 1, (*, *) 0), so a tie means the
same scope twice, which validation rejects: the later entry would never apply.

The defaults are the *effective* ones (§11.9): unset or no policy at all means a request
runs at most once within 24 h, queries time out after 30 s (capped at 600 s), migrations
have no timeout, and results are kept 30 days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.server.errors import Conflict, Gone
from domain.server.policy_matching import resolve_scoped, scope_problems
from domain.server.rbac import Selector, SelectorKind
from domain.server.request_lifecycle import REDISPATCH_STATUSES, RequestStatus
from domain.server.workflows import (
    WILDCARD,
    KeyPath,
    ValidationProblem,
)
from domain.shared.operations import Operation

__all__ = [
    "DEFAULT_EXECUTION_POLICY",
    "DEFAULT_MIGRATION_LEASE_SECS",
    "DEFAULT_RESULT_RETENTION_DAYS",
    "LEASE_MARGIN_SECS",
    "MIGRATION_MUTATIONS",
    "MIN_LEASE_SECS",
    "DeliveryMode",
    "ExecutionPolicy",
    "ResultPolicy",
    "check_dispatch_allowed",
    "effective_statement_timeout",
    "lease_seconds",
    "policy_lease_seconds",
    "resolve_execution_policy",
    "resolve_result_policy",
    "validate_execution_policies",
    "validate_result_policies",
]

#: The shortest lease the server grants (docs/protocol.md §6.2).
MIN_LEASE_SECS = 60
#: Added to a statement timeout to get a lease: time to report after the timeout fires.
LEASE_MARGIN_SECS = 30
#: The lease of a migration with neither a lease nor a timeout configured.
DEFAULT_MIGRATION_LEASE_SECS = 600
DEFAULT_RESULT_RETENTION_DAYS = 30

#: Operations that change the schema: their own timeout (default none) and lease rule.
#: migrate_status is a plain query here, as in dbward 0.2.
MIGRATION_MUTATIONS = frozenset(
    {Operation.MIGRATE_UP, Operation.MIGRATE_DOWN, Operation.MIGRATE_REPAIR}
)


# --- execution policies -------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutionPolicy:
    """`[[execution_policies]]` with the effective defaults of §3.1 filled in."""

    database: str = WILDCARD
    environment: str = WILDCARD
    #: How many executions one request may have, a lost one included (it may have run).
    max_executions: int = 1
    #: Re-dispatch of a request that ran is allowed this long after it was last resolved
    #: (its last result; for a lost one, its approval).
    execution_window_secs: int = 86400
    #: Whether a `failed` request may be resumed.
    retry_on_failure: bool = False
    #: Sent to the agent for queries (execute_select, execute_dml, migrate_status).
    statement_timeout_secs: int = 30
    #: Cap on any query timeout, a workflow's override included.
    max_statement_timeout_secs: int = 600
    #: migrate_up/down/repair; 0 = no timeout.
    migration_statement_timeout_secs: int = 0
    #: migrate_up/down/repair lease; None = derived (see `policy_lease_seconds`).
    migration_lease_duration_secs: int | None = None
    #: Row cap sent to the agent; None = the agent's own limit.
    max_rows: int | None = None

    @property
    def id(self) -> str:
        return f"ep:{self.database}:{self.environment}"


DEFAULT_EXECUTION_POLICY = ExecutionPolicy()


def resolve_execution_policy(
    policies: Sequence[ExecutionPolicy], database: str, environment: str
) -> ExecutionPolicy:
    """The policy for (database, environment); the built-in defaults when none matches."""
    return resolve_scoped(policies, database, environment) or DEFAULT_EXECUTION_POLICY


def effective_statement_timeout(
    policy: ExecutionPolicy, operation: Operation, workflow_override: int | None = None
) -> int:
    """The statement timeout sent to the agent, in seconds; 0 means none.

    Migrations (migrate_up/down/repair) get `migration_statement_timeout_secs` (default 0,
    no timeout: a half-applied DDL is worse than a slow one). Every other operation gets
    the matched workflow's `statement_timeout_secs` when it sets one, else the policy's,
    and never more than `max_statement_timeout_secs`.
    """
    if operation in MIGRATION_MUTATIONS:
        return policy.migration_statement_timeout_secs
    timeout = policy.statement_timeout_secs if workflow_override is None else workflow_override
    return min(timeout, policy.max_statement_timeout_secs)


def _formula(timeout: int, cap: int) -> int:
    """docs/protocol.md §6.2: `max(60, min(t + 30, max + 30))`."""
    return max(MIN_LEASE_SECS, min(timeout + LEASE_MARGIN_SECS, cap + LEASE_MARGIN_SECS))


def policy_lease_seconds(
    policy: ExecutionPolicy, operation: Operation, workflow_override: int | None = None
) -> int:
    """The dbward 0.2 lease (docs/protocol.md §6.2), before any request from the agent.

    Queries: `max(60, min(t + 30, max_statement_timeout_secs + 30))` with t the effective
    statement timeout (60 s with the defaults). Migrations: `migration_lease_duration_secs`
    when set; else the same formula on `migration_statement_timeout_secs` when that is
    above 0; else 600 s.
    """
    cap = policy.max_statement_timeout_secs
    if operation in MIGRATION_MUTATIONS:
        if policy.migration_lease_duration_secs is not None:
            return policy.migration_lease_duration_secs
        if policy.migration_statement_timeout_secs > 0:
            return _formula(policy.migration_statement_timeout_secs, cap)
        return DEFAULT_MIGRATION_LEASE_SECS
    return _formula(effective_statement_timeout(policy, operation, workflow_override), cap)


def lease_seconds(
    policy: ExecutionPolicy,
    operation: Operation,
    requested_secs: int | None = None,
    workflow_override: int | None = None,
) -> int:
    """The lease granted at claim and renewed by each heartbeat, in seconds.

    docs/agent.md §5 improvement 12: our agent sends `lease_duration_secs` (default 300) in
    the claim body. The rule is

        lease = max(policy_lease, min(requested, cap))
        cap   = max(policy_lease, max_statement_timeout_secs + 30)

    so an agent may *lengthen* its lease up to the time the longest allowed query needs
    to finish and report (630 s with the defaults), never shorten it below the policy
    lease, and an agent that sends nothing (dbward 0.2) gets exactly the dbward 0.2 lease.
    The same cap applies to migrations, whose policy lease may already exceed it (then the
    request changes nothing).
    """
    base = policy_lease_seconds(policy, operation, workflow_override)
    if requested_secs is None:
        return base
    cap = max(base, policy.max_statement_timeout_secs + LEASE_MARGIN_SECS)
    return max(base, min(requested_secs, cap))


def check_dispatch_allowed(
    policy: ExecutionPolicy,
    *,
    status: RequestStatus,
    executions: int,
    resolved_at: datetime | None,
    now: datetime,
) -> None:
    """The execution policy's say on dispatching a request again (docs/server.md §1.4).

    `executions` counts every execution the request has had, a lost one included: the
    statement may have run, and `max_executions` bounds how often it may have run (the
    reference counted stored results, which a `no_result_store` run never leaves, §11.5).
    The window and `retry_on_failure` apply to a re-dispatch, from `executed`, `failed` or
    `execution_lost`; the first dispatch of an approved request is bounded by its approved
    TTL instead. Raises Conflict (409) or Gone (410, the window is over).
    """
    if executions >= policy.max_executions:
        raise Conflict(
            f"max executions reached ({executions} of {policy.max_executions}; "
            "a lost execution counts, it may have run)"
        )
    if status not in REDISPATCH_STATUSES:
        return
    if resolved_at is not None and now - resolved_at > timedelta(
        seconds=policy.execution_window_secs
    ):
        raise Gone("execution window expired")
    if status is RequestStatus.FAILED and not policy.retry_on_failure:
        raise Conflict("retry on failure disabled")


# --- result policies ----------------------------------------------------------------------


class DeliveryMode(StrEnum):
    #: Stream the result to a waiting client and persist it.
    BOTH = "both"
    #: Stream only: a successful result is not persisted (failures always are).
    STREAM = "stream"


@dataclass(frozen=True)
class ResultPolicy:
    """`[[result_policies]]` (§3.2)."""

    database: str = WILDCARD
    environment: str = WILDCARD
    #: Stored results expire this long after the execution finished.
    retention_days: int = DEFAULT_RESULT_RETENTION_DAYS
    delivery_mode: DeliveryMode = DeliveryMode.BOTH
    #: Who may read results besides the requester, share_with and the approvers.
    access: tuple[Selector, ...] = ()

    @property
    def id(self) -> str:
        return f"rp:{self.database}:{self.environment}"

    @property
    def persists_successes(self) -> bool:
        return self.delivery_mode is DeliveryMode.BOTH


def resolve_result_policy(
    policies: Sequence[ResultPolicy],
    database: str,
    environment: str,
    default_retention_days: int = DEFAULT_RESULT_RETENTION_DAYS,
) -> ResultPolicy:
    """The policy for (database, environment); with none, `both` and the default retention.

    `default_retention_days` is `[retention].result_ttl_days`, which dbward 0.2 parsed
    but never used (§11.1); here it is the retention when no policy says otherwise.
    """
    found = resolve_scoped(policies, database, environment)
    return found or ResultPolicy(retention_days=default_retention_days)


# --- validation ---------------------------------------------------------------------------


def _minimum(
    problems: list[ValidationProblem], key: KeyPath, value: int | None, minimum: int
) -> None:
    if value is not None and value < minimum:
        problems.append(ValidationProblem(key, f"must be at least {minimum}, got {value}"))


def validate_execution_policies(
    policies: Sequence[ExecutionPolicy], key: KeyPath = ("execution_policies",)
) -> tuple[ValidationProblem, ...]:
    """Errors in an `[[execution_policies]]` list; keys and messages use the file's names."""
    problems = scope_problems(policies, key)
    for index, policy in enumerate(policies):
        at: KeyPath = (*key, index)
        _minimum(problems, (*at, "max_executions"), policy.max_executions, 1)
        _minimum(problems, (*at, "execution_window_secs"), policy.execution_window_secs, 1)
        _minimum(problems, (*at, "statement_timeout_secs"), policy.statement_timeout_secs, 1)
        _minimum(
            problems, (*at, "max_statement_timeout_secs"), policy.max_statement_timeout_secs, 1
        )
        _minimum(
            problems,
            (*at, "migration_statement_timeout_secs"),
            policy.migration_statement_timeout_secs,
            0,
        )
        _minimum(
            problems,
            (*at, "migration_lease_duration_secs"),
            policy.migration_lease_duration_secs,
            MIN_LEASE_SECS,
        )
        _minimum(problems, (*at, "max_rows"), policy.max_rows, 1)
        if policy.statement_timeout_secs > policy.max_statement_timeout_secs:
            problems.append(
                ValidationProblem(
                    (*at, "statement_timeout_secs"),
                    f"{policy.statement_timeout_secs} is above max_statement_timeout_secs "
                    f"({policy.max_statement_timeout_secs}); lower it or raise the cap",
                )
            )
    return tuple(problems)


def validate_result_policies(
    policies: Sequence[ResultPolicy], key: KeyPath = ("result_policies",)
) -> tuple[ValidationProblem, ...]:
    """Errors in a `[[result_policies]]` list; keys and messages use the file's names."""
    problems = scope_problems(policies, key)
    for index, policy in enumerate(policies):
        at: KeyPath = (*key, index)
        _minimum(problems, (*at, "retention_days"), policy.retention_days, 1)
        seen: set[str] = set()
        for position, selector in enumerate(policy.access):
            where: KeyPath = (*at, "access", position)
            if selector.kind is SelectorKind.REQUESTER:
                problems.append(
                    ValidationProblem(
                        where, "the requester can always read their results; remove it"
                    )
                )
            elif not selector.name:
                problems.append(ValidationProblem(where, f"{selector.kind}: needs a name"))
            elif str(selector) in seen:
                problems.append(
                    ValidationProblem(where, f"{selector} is listed twice; remove the duplicate")
                )
            seen.add(str(selector))
    return tuple(problems)
