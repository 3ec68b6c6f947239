"""Execution and result policies: effective defaults, resolution by specificity, the
statement timeout (with the workflow override), the lease rule, and validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.server.errors import Conflict, Gone
from domain.server.execution_policies import (
    DEFAULT_EXECUTION_POLICY,
    DeliveryMode,
    ExecutionPolicy,
    ResultPolicy,
    check_dispatch_allowed,
    effective_statement_timeout,
    lease_seconds,
    policy_lease_seconds,
    resolve_execution_policy,
    resolve_result_policy,
    validate_execution_policies,
    validate_result_policies,
)
from domain.server.rbac import Selector, SelectorKind
from domain.server.request_lifecycle import RequestStatus
from domain.shared.operations import Operation

SELECT = Operation.EXECUTE_SELECT
DML = Operation.EXECUTE_DML
STATUS = Operation.MIGRATE_STATUS
MIGRATIONS = (Operation.MIGRATE_UP, Operation.MIGRATE_DOWN, Operation.MIGRATE_REPAIR)


class TestDefaults:
    def test_effective_defaults(self) -> None:
        policy = ExecutionPolicy()
        assert policy == DEFAULT_EXECUTION_POLICY
        assert (policy.database, policy.environment) == ("*", "*")
        assert policy.max_executions == 1
        assert policy.execution_window_secs == 86400
        assert policy.retry_on_failure is False
        assert policy.statement_timeout_secs == 30
        assert policy.max_statement_timeout_secs == 600
        assert policy.migration_statement_timeout_secs == 0
        assert policy.migration_lease_duration_secs is None
        assert policy.max_rows is None
        assert policy.id == "ep:*:*"

    def test_result_policy_defaults(self) -> None:
        policy = ResultPolicy()
        assert (policy.retention_days, policy.delivery_mode, policy.access) == (
            30,
            DeliveryMode.BOTH,
            (),
        )
        assert policy.persists_successes
        assert not ResultPolicy(delivery_mode=DeliveryMode.STREAM).persists_successes
        assert ResultPolicy("app", "production").id == "rp:app:production"


class TestResolve:
    def test_no_policy_gives_the_defaults(self) -> None:
        assert resolve_execution_policy([], "app", "production") is DEFAULT_EXECUTION_POLICY
        other = ExecutionPolicy("other", max_executions=3)
        assert resolve_execution_policy([other], "app", "production") is DEFAULT_EXECUTION_POLICY

    def test_specificity_environment_2_database_1(self) -> None:
        anywhere = ExecutionPolicy(max_executions=2)
        by_db = ExecutionPolicy("app", max_executions=3)
        by_env = ExecutionPolicy(environment="production", max_executions=4)
        exact = ExecutionPolicy("app", "production", max_executions=5)
        policies = [anywhere, by_db, by_env, exact]
        for order in (policies, policies[::-1]):
            assert resolve_execution_policy(order, "app", "production") is exact
            assert resolve_execution_policy(order, "app", "staging") is by_db
            assert resolve_execution_policy(order, "billing", "production") is by_env
            assert resolve_execution_policy(order, "billing", "staging") is anywhere
        assert resolve_execution_policy([by_db, by_env], "app", "production") is by_env

    def test_ties_go_to_the_first(self) -> None:
        first, second = ExecutionPolicy("app", max_rows=1), ExecutionPolicy("app", max_rows=2)
        assert resolve_execution_policy([first, second], "app", "x") is first

    def test_result_policy_resolution_and_default_retention(self) -> None:
        exact = ResultPolicy("app", "production", retention_days=7)
        assert resolve_result_policy([exact], "app", "production") is exact
        fallback = resolve_result_policy([exact], "app", "staging", default_retention_days=90)
        assert fallback == ResultPolicy(retention_days=90)
        assert resolve_result_policy([], "app", "staging").retention_days == 30


class TestStatementTimeout:
    @pytest.mark.parametrize("op", [SELECT, DML, STATUS])
    def test_queries_get_the_policy_timeout(self, op: Operation) -> None:
        assert effective_statement_timeout(ExecutionPolicy(), op) == 30
        assert effective_statement_timeout(ExecutionPolicy(statement_timeout_secs=90), op) == 90

    @pytest.mark.parametrize("op", MIGRATIONS)
    def test_migrations_default_to_no_timeout(self, op: Operation) -> None:
        assert effective_statement_timeout(ExecutionPolicy(), op) == 0
        policy = ExecutionPolicy(migration_statement_timeout_secs=3600)
        assert effective_statement_timeout(policy, op) == 3600

    def test_workflow_override_replaces_the_query_timeout(self) -> None:
        assert effective_statement_timeout(ExecutionPolicy(), DML, workflow_override=5) == 5
        assert effective_statement_timeout(ExecutionPolicy(), SELECT, workflow_override=120) == 120

    def test_workflow_override_is_capped(self) -> None:
        policy = ExecutionPolicy(max_statement_timeout_secs=100)
        assert effective_statement_timeout(policy, SELECT, workflow_override=500) == 100

    @pytest.mark.parametrize("op", MIGRATIONS)
    def test_workflow_override_leaves_migrations_alone(self, op: Operation) -> None:
        policy = ExecutionPolicy(migration_statement_timeout_secs=3600)
        assert effective_statement_timeout(policy, op, workflow_override=5) == 3600


class TestLease:
    """docs/protocol.md §6.2, then the agent's requested lease (docs/agent.md §5 item 12)."""

    def test_default_query_lease_is_60(self) -> None:
        assert policy_lease_seconds(ExecutionPolicy(), SELECT) == 60
        assert lease_seconds(ExecutionPolicy(), SELECT) == 60

    @pytest.mark.parametrize(
        ("timeout", "cap", "expected"),
        [
            (30, 600, 60),  # floor
            (100, 600, 130),  # t + 30
            (600, 600, 630),
            (10, 10, 60),
        ],
    )
    def test_query_formula(self, timeout: int, cap: int, expected: int) -> None:
        policy = ExecutionPolicy(statement_timeout_secs=timeout, max_statement_timeout_secs=cap)
        assert policy_lease_seconds(policy, DML) == expected

    def test_migrate_status_is_a_query(self) -> None:
        policy = ExecutionPolicy(statement_timeout_secs=200, migration_lease_duration_secs=999)
        assert policy_lease_seconds(policy, STATUS) == 230

    def test_workflow_override_feeds_the_formula(self) -> None:
        assert policy_lease_seconds(ExecutionPolicy(), SELECT, workflow_override=300) == 330

    @pytest.mark.parametrize("op", MIGRATIONS)
    def test_migration_lease_rules(self, op: Operation) -> None:
        assert policy_lease_seconds(ExecutionPolicy(), op) == 600
        with_timeout = ExecutionPolicy(migration_statement_timeout_secs=200)
        assert policy_lease_seconds(with_timeout, op) == 230
        long_timeout = ExecutionPolicy(migration_statement_timeout_secs=3600)
        assert policy_lease_seconds(long_timeout, op) == 630  # the dbward 0.2 formula's cap
        explicit = ExecutionPolicy(
            migration_statement_timeout_secs=200, migration_lease_duration_secs=1800
        )
        assert policy_lease_seconds(explicit, op) == 1800

    def test_requested_lease_lengthens_up_to_the_cap(self) -> None:
        policy = ExecutionPolicy()  # policy lease 60, cap 630
        assert lease_seconds(policy, SELECT, requested_secs=300) == 300
        assert lease_seconds(policy, SELECT, requested_secs=630) == 630
        assert lease_seconds(policy, SELECT, requested_secs=10_000) == 630

    def test_requested_lease_never_shortens(self) -> None:
        assert lease_seconds(ExecutionPolicy(), SELECT, requested_secs=10) == 60
        assert lease_seconds(ExecutionPolicy(), SELECT, requested_secs=0) == 60
        assert lease_seconds(ExecutionPolicy(), SELECT, requested_secs=-5) == 60

    def test_cap_follows_max_statement_timeout(self) -> None:
        policy = ExecutionPolicy(statement_timeout_secs=30, max_statement_timeout_secs=60)
        assert lease_seconds(policy, SELECT, requested_secs=300) == 90

    @pytest.mark.parametrize("op", MIGRATIONS)
    def test_migrations_use_the_same_rule(self, op: Operation) -> None:
        # policy lease 600, cap max(600, 630) = 630
        assert lease_seconds(ExecutionPolicy(), op, requested_secs=300) == 600
        assert lease_seconds(ExecutionPolicy(), op, requested_secs=1000) == 630
        # an explicit migration lease above the cap is never cut
        explicit = ExecutionPolicy(migration_lease_duration_secs=1800)
        assert lease_seconds(explicit, op, requested_secs=60) == 1800
        assert lease_seconds(explicit, op, requested_secs=5000) == 1800


class TestValidateExecutionPolicies:
    def test_good_policies_pass(self) -> None:
        policies = [ExecutionPolicy(), ExecutionPolicy("app"), ExecutionPolicy("app", "prod")]
        assert validate_execution_policies(policies) == ()

    def test_duplicate_scope(self) -> None:
        problems = validate_execution_policies([ExecutionPolicy("app"), ExecutionPolicy("app")])
        assert [str(p) for p in problems] == [
            "execution_policies[1]: same database 'app' and environment '*' as "
            "execution_policies[0], so it would never apply; merge the two"
        ]

    def test_timeout_above_cap(self) -> None:
        policy = ExecutionPolicy(statement_timeout_secs=700)
        assert [str(p) for p in validate_execution_policies([policy])] == [
            "execution_policies[0].statement_timeout_secs: 700 is above "
            "max_statement_timeout_secs (600); lower it or raise the cap"
        ]

    def test_ranges(self) -> None:
        policy = ExecutionPolicy(
            "App",
            max_executions=0,
            execution_window_secs=0,
            statement_timeout_secs=0,
            max_statement_timeout_secs=0,
            migration_statement_timeout_secs=-1,
            migration_lease_duration_secs=59,
            max_rows=0,
        )
        assert [str(p) for p in validate_execution_policies([policy])] == [
            "execution_policies[0].database: invalid database name 'App': use 1-63 characters "
            "of a-z, 0-9, '_' or '-', starting with a letter, or \"*\" for any",
            "execution_policies[0].max_executions: must be at least 1, got 0",
            "execution_policies[0].execution_window_secs: must be at least 1, got 0",
            "execution_policies[0].statement_timeout_secs: must be at least 1, got 0",
            "execution_policies[0].max_statement_timeout_secs: must be at least 1, got 0",
            "execution_policies[0].migration_statement_timeout_secs: must be at least 0, got -1",
            "execution_policies[0].migration_lease_duration_secs: must be at least 60, got 59",
            "execution_policies[0].max_rows: must be at least 1, got 0",
        ]


class TestValidateResultPolicies:
    def test_good_policy_passes(self) -> None:
        access = (Selector(SelectorKind.ROLE, "dba"), Selector(SelectorKind.USER, "alice"))
        assert validate_result_policies([ResultPolicy("app", access=access)]) == ()

    def test_problems(self) -> None:
        policies = [
            ResultPolicy(
                retention_days=0,
                access=(
                    Selector(SelectorKind.REQUESTER),
                    Selector(SelectorKind.ROLE, "dba"),
                    Selector(SelectorKind.ROLE, "dba"),
                    Selector(SelectorKind.GROUP, ""),
                ),
            ),
            ResultPolicy(),
        ]
        assert [str(p) for p in validate_result_policies(policies)] == [
            "result_policies[1]: same database '*' and environment '*' as result_policies[0], "
            "so it would never apply; merge the two",
            "result_policies[0].retention_days: must be at least 1, got 0",
            "result_policies[0].access[0]: the requester can always read their results; remove it",
            "result_policies[0].access[2]: role:dba is listed twice; remove the duplicate",
            "result_policies[0].access[3]: group: needs a name",
        ]


class TestDispatchAllowed:
    """docs/server.md §1.4: max executions, then the window, then retry_on_failure."""

    NOW = datetime(2030, 1, 1, tzinfo=UTC)

    def check(
        self,
        policy: ExecutionPolicy,
        status: RequestStatus,
        executions: int = 1,
        resolved_secs_ago: int | None = 60,
    ) -> None:
        resolved_at = (
            None if resolved_secs_ago is None else self.NOW - timedelta(seconds=resolved_secs_ago)
        )
        check_dispatch_allowed(
            policy, status=status, executions=executions, resolved_at=resolved_at, now=self.NOW
        )

    def test_first_dispatch_needs_only_room_for_an_execution(self) -> None:
        for status in (RequestStatus.APPROVED, RequestStatus.AUTO_APPROVED):
            self.check(DEFAULT_EXECUTION_POLICY, status, executions=0, resolved_secs_ago=10**7)
            with pytest.raises(Conflict, match=r"max executions reached \(1 of 1"):
                self.check(DEFAULT_EXECUTION_POLICY, status, executions=1)

    def test_max_executions_comes_first(self) -> None:
        policy = ExecutionPolicy(max_executions=2, execution_window_secs=10)
        with pytest.raises(Conflict, match="max executions"):
            self.check(policy, RequestStatus.FAILED, executions=2, resolved_secs_ago=99)
        self.check(policy, RequestStatus.EXECUTED, executions=1, resolved_secs_ago=10)

    @pytest.mark.parametrize(
        "status", [RequestStatus.EXECUTED, RequestStatus.FAILED, RequestStatus.EXECUTION_LOST]
    )
    def test_the_window_bounds_every_rerun(self, status: RequestStatus) -> None:
        policy = ExecutionPolicy(max_executions=5, execution_window_secs=100, retry_on_failure=True)
        self.check(policy, status, resolved_secs_ago=100)
        self.check(policy, status, resolved_secs_ago=None)
        with pytest.raises(Gone, match="execution window expired"):
            self.check(policy, status, resolved_secs_ago=101)

    def test_retry_on_failure_gates_only_failed(self) -> None:
        policy = ExecutionPolicy(max_executions=5)
        with pytest.raises(Conflict, match="retry on failure disabled"):
            self.check(policy, RequestStatus.FAILED)
        self.check(policy, RequestStatus.EXECUTION_LOST)
        self.check(policy, RequestStatus.EXECUTED)
        self.check(ExecutionPolicy(max_executions=5, retry_on_failure=True), RequestStatus.FAILED)
