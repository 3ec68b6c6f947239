"""The agent's pure domain: operations, scopes, versions, backoff, limits, tokens, health."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from application.agent.cancellation import CancelReason, CancelToken
from domain.agent.database_health import DatabaseHealth, DatabaseState
from domain.agent.errors import TokenVerificationError
from domain.agent.explain import ExplainRefused, check_explainable
from domain.agent.lease import lease_seconds, submit_budget_secs
from domain.agent.result_limits import ResultLimits, RowCollector
from domain.shared.backoff import ExponentialBackoff, FullJitterBackoff
from domain.shared.execution_token import (
    canonical_json,
    detail_hash,
    detail_hash_input,
    signed_message,
    sql_to_execute,
)
from domain.shared.jobs import ClaimedJob
from domain.shared.operations import (
    DEFAULT_OPERATIONS,
    Operation,
    UnsupportedOperationError,
    parse_canonical_operation,
    parse_operation,
)
from domain.shared.scopes import Scope

# --- operations -----------------------------------------------------------------------


def test_operations_have_the_canonical_wire_names() -> None:
    assert [op.value for op in Operation] == [
        "execute_select",
        "execute_dml",
        "migrate_up",
        "migrate_down",
        "migrate_status",
        "migrate_repair",
    ]
    assert all(parse_operation(op.value) is op for op in Operation)


@pytest.mark.parametrize("alias", ["execute_query", "execute", "query"])
def test_operation_aliases_parse_as_execute_select(alias: str) -> None:
    assert parse_operation(alias) is Operation.EXECUTE_SELECT


def test_unknown_operation_is_an_error_naming_it() -> None:
    with pytest.raises(UnsupportedOperationError, match=r"^unsupported operation: drop_all$"):
        parse_operation("drop_all")


def test_aliases_are_refused_where_only_canonical_names_are_allowed() -> None:
    with pytest.raises(UnsupportedOperationError):
        parse_canonical_operation("execute_query")


def test_default_operations_are_the_standard_five_without_repair() -> None:
    assert Operation.MIGRATE_REPAIR not in DEFAULT_OPERATIONS
    assert len(DEFAULT_OPERATIONS) == 5


def test_every_migrate_operation_is_a_migration_but_only_up_and_down_change_the_schema() -> None:
    migrations = {op for op in Operation if op.is_migration}
    assert migrations == {
        Operation.MIGRATE_UP,
        Operation.MIGRATE_DOWN,
        Operation.MIGRATE_STATUS,
        Operation.MIGRATE_REPAIR,
    }
    assert {op for op in Operation if op.mutates_schema} == {
        Operation.MIGRATE_UP,
        Operation.MIGRATE_DOWN,
    }


# --- backoff --------------------------------------------------------------------------


def test_exponential_backoff_doubles_from_one_second_to_a_fifteen_second_cap() -> None:
    backoff = ExponentialBackoff(initial_secs=1.0, max_secs=15.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 15, 15]
    assert backoff.delay(10_000) == 15


def test_exponential_backoff_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        ExponentialBackoff(1.0, 15.0).delay(0)


def test_full_jitter_draws_between_zero_and_a_ceiling_capped_at_fifteen_seconds() -> None:
    backoff = FullJitterBackoff(base_secs=1.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 15, 15]
    assert backoff.ceiling(500) == 15
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high / 2

    assert backoff.delay(3, uniform) == 2.0
    assert draws == [(0.0, 4.0)]


# --- result limits --------------------------------------------------------------------


def test_claim_max_rows_lowers_the_agent_cap() -> None:
    assert ResultLimits.for_claim(50, 10_000, 1024) == ResultLimits(max_rows=50, max_bytes=1024)


def test_claim_max_rows_never_raises_the_agent_cap() -> None:
    assert ResultLimits.for_claim(50_000, 10_000, 1024).max_rows == 10_000


def test_no_claim_max_rows_means_the_agent_cap() -> None:
    assert ResultLimits.for_claim(None, 10_000, 1024).max_rows == 10_000


def _row(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def test_exactly_max_rows_rows_are_not_truncated() -> None:
    collector = RowCollector(ResultLimits(max_rows=3, max_bytes=10_000))
    assert all(collector.offer(_row(n)) for n in range(3))
    assert not collector.truncated
    assert collector.truncation_reason is None
    assert json.loads(collector.rows_json()) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_one_row_over_max_rows_is_truncated_with_the_row_limit_reason() -> None:
    collector = RowCollector(ResultLimits(max_rows=3, max_bytes=10_000))
    offered = [collector.offer(_row(n)) for n in range(4)]
    assert offered == [True, True, True, False]
    assert collector.truncated
    assert collector.truncation_reason == "row limit reached (3)"
    assert len(collector.rows) == 3


def test_byte_cap_refuses_the_row_that_would_cross_it() -> None:
    row = b'{"v":"xxxx"}'  # 12 bytes; two rows and a comma take 25
    collector = RowCollector(ResultLimits(max_rows=100, max_bytes=30))
    assert collector.offer(row)
    assert collector.offer(row)
    assert not collector.offer(row)
    assert collector.truncation_reason == "size limit reached (30 bytes)"
    assert len(collector.rows) == 2


def test_byte_cap_counts_the_reserved_envelope() -> None:
    collector = RowCollector(ResultLimits(max_rows=100, max_bytes=30), reserved_bytes=20)
    assert not collector.offer(b'{"v":"xxxx"}')
    assert collector.truncated


@pytest.mark.parametrize("row_bytes", [8, 9, 10])
def test_collected_rows_json_never_exceeds_max_bytes(row_bytes: int) -> None:
    limits = ResultLimits(max_rows=100, max_bytes=10)
    collector = RowCollector(limits)
    row = b'"' + b"x" * (row_bytes - 2) + b'"'
    while collector.offer(row):
        pass
    assert len(collector.rows_json()) <= limits.max_bytes


# --- execution token rules ------------------------------------------------------------


def test_canonical_json_sorts_keys_recursively_and_is_compact() -> None:
    value = {"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": True}}
    assert canonical_json(value) == '{"a":{"c":true,"d":[1,{"y":1,"z":0}]},"b":1}'


def test_canonical_json_keeps_non_ascii_raw_and_does_not_escape_slash() -> None:
    assert canonical_json({"name": "café/ß"}) == '{"name":"café/ß"}'


def test_canonical_json_escapes_control_characters_as_lowercase_u00xx() -> None:
    assert canonical_json("a\x1fb\x0b\n\t") == '"a\\u001fb\\u000b\\n\\t"'


def test_detail_hash_uses_the_raw_execution_plan_json_byte_for_byte() -> None:
    plan_json = '["SELECT 1", "SELECT 2"]'  # not compact: hashed as stored, never re-serialized
    assert detail_hash_input("execute_select", "SELECT 1; SELECT 2", plan_json) == (
        plan_json.encode()
    )
    expected = hashlib.sha256(plan_json.encode()).hexdigest()
    assert detail_hash("execute_select", "ignored", plan_json) == expected


def test_detail_hash_plan_wins_even_for_migrations() -> None:
    assert detail_hash_input("migrate_up", '{"b":1}', '["x"]') == b'["x"]'


@pytest.mark.parametrize("operation", ["migrate_up", "migrate_down", "migrate_repair"])
def test_detail_hash_canonicalizes_migration_json_detail(operation: str) -> None:
    detail = '{ "version": "2", "files": {"up": "CREATE TABLE t ()", "name": "é"} }'
    assert detail_hash_input(operation, detail, None) == (
        '{"files":{"name":"é","up":"CREATE TABLE t ()"},"version":"2"}'.encode()
    )


def test_detail_hash_uses_invalid_migration_json_unchanged() -> None:
    assert detail_hash_input("migrate_up", "{not json", None) == b"{not json"


def test_detail_hash_uses_the_raw_detail_for_sql_without_a_plan() -> None:
    assert detail_hash_input("execute_dml", ' {"a": 1} ', None) == b' {"a": 1} '


def test_detail_hash_of_migrate_status_is_the_hash_of_the_empty_detail() -> None:
    assert detail_hash("migrate_status", "", None) == hashlib.sha256(b"").hexdigest()


def test_signed_message_puts_environment_before_database() -> None:
    message = signed_message(
        request_id="r1",
        operation="execute_dml",
        environment="production",
        database="app",
        detail_hash="abc",
        expires_at="2030-01-01T00:05:00.000000000+00:00",
        requester_role="dev",
        requester_subject_id="alice",
    )
    assert message == (
        b"r1|execute_dml|production|app|abc|2030-01-01T00:05:00.000000000+00:00|dev|alice"
    )


def _claim(detail: str, plan_json: str | None) -> ClaimedJob:
    return ClaimedJob(
        execution_id="e1",
        request_id="r1",
        execution_token="{}",
        operation="execute_select",
        database="app",
        environment="production",
        detail=detail,
        statement_timeout_secs=30,
        max_rows=None,
        lease_expires_at="2030-01-01T00:01:00+00:00",
        execution_plan=("DROP TABLE unsigned",),
        execution_plan_json=plan_json,
    )


def test_sql_to_execute_joins_the_signed_plan_and_ignores_the_unsigned_copy() -> None:
    claim = _claim("SELECT 1; SELECT 2", '["SELECT 1","SELECT 2"]')
    assert sql_to_execute(claim) == "SELECT 1;\nSELECT 2"


def test_sql_to_execute_falls_back_to_the_detail_without_a_plan() -> None:
    assert sql_to_execute(_claim("SELECT 3", None)) == "SELECT 3"


@pytest.mark.parametrize("plan_json", ["[not json", '{"a":1}', '["a", 2]'])
def test_malformed_plan_json_is_a_token_verification_error(plan_json: str) -> None:
    with pytest.raises(TokenVerificationError, match="malformed execution_plan_json"):
        sql_to_execute(_claim("SELECT 1", plan_json))


# --- EXPLAIN input --------------------------------------------------------------------


def test_explain_input_is_trimmed_of_whitespace_and_trailing_semicolons() -> None:
    assert check_explainable("  SELECT * FROM t ;\n") == "SELECT * FROM t"


@pytest.mark.parametrize(
    "sql", ["EXPLAIN ANALYZE SELECT 1", "explain (analyze, format json) select 1"]
)
def test_explain_analyze_is_refused(sql: str) -> None:
    with pytest.raises(ExplainRefused, match="ANALYZE"):
        check_explainable(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYSE SELECT 1",  # PostgreSQL accepts the British spelling too
        "/* note */ EXPLAIN ANALYZE SELECT 1",  # a leading comment hides the keyword
    ],
)
def test_explain_analyze_is_refused_in_every_spelling(sql: str) -> None:
    with pytest.raises(ExplainRefused):
        check_explainable(sql)


def test_empty_explain_input_is_refused() -> None:
    with pytest.raises(ExplainRefused, match="nothing to explain"):
        check_explainable(" ; ")


# --- database health ------------------------------------------------------------------

SCOPE = Scope("app", "production")


def test_database_health_starts_connecting_and_a_first_connect_is_not_a_recovery() -> None:
    health = DatabaseHealth(SCOPE)
    assert health.state is DatabaseState.CONNECTING
    assert not health.is_up
    assert health.mark_up() is False
    assert health.is_up


def test_database_health_reports_a_new_outage_once_and_keeps_its_start() -> None:
    health = DatabaseHealth(SCOPE)
    health.mark_up()
    assert health.mark_down("reset by peer", now=10.0) is True
    assert health.mark_down("still refused", now=12.0) is False
    assert health.state is DatabaseState.DOWN
    assert health.down_since == 10.0
    assert health.last_error == "still refused"


def test_database_health_recovery_clears_the_outage() -> None:
    health = DatabaseHealth(SCOPE)
    health.mark_down("refused", now=1.0)
    health.record_failed_attempt("refused again")
    assert health.mark_up() is True
    assert (health.last_error, health.down_since, health.failed_attempts) == (None, None, 0)


def test_reconnect_is_due_once_per_interval_and_only_when_down() -> None:
    health = DatabaseHealth(SCOPE)
    health.mark_up()
    assert not health.reconnect_due(100.0, 1.0)
    health.mark_down("refused", now=100.0)
    assert health.reconnect_due(100.0, 1.0)  # never attempted yet
    health.record_attempt(100.0)
    assert not health.reconnect_due(100.5, 1.0)
    assert health.reconnect_due(101.0, 1.0)
    health.record_attempt(101.0)
    assert not health.reconnect_due(101.9, 1.0)


# --- cancellation ---------------------------------------------------------------------


def test_cancel_token_fires_its_callbacks_once() -> None:
    token = CancelToken()
    fired: list[str] = []
    token.on_cancel(lambda: fired.append("kill"))
    assert token.cancel(CancelReason.SERVER_CANCELLED) is True
    assert token.cancel(CancelReason.LEASE_LOST) is False
    assert fired == ["kill"]
    assert token.cancelled
    assert token.reason is CancelReason.SERVER_CANCELLED
    assert token.event.is_set()


def test_cancel_token_registering_after_cancel_fires_at_once() -> None:
    token = CancelToken()
    token.cancel(CancelReason.SHUTDOWN)
    fired: list[str] = []
    token.on_cancel(lambda: fired.append("kill"))
    assert fired == ["kill"]


def test_cancel_token_unregistered_callback_does_not_fire() -> None:
    token = CancelToken()
    fired: list[str] = []
    unregister = token.on_cancel(lambda: fired.append("kill"))
    unregister()
    token.cancel(CancelReason.SERVER_CANCELLED)
    assert fired == []


# --- leases ---------------------------------------------------------------------------


def test_submit_budget_is_at_least_the_reference_300_seconds() -> None:
    assert submit_budget_secs(60.0) == 300.0
    assert submit_budget_secs(0.0) == 300.0


def test_submit_budget_is_the_lease_plus_60_seconds_grace_for_long_leases() -> None:
    assert submit_budget_secs(600.0) == 660.0


def test_lease_seconds_is_the_granted_length_and_never_negative() -> None:
    claimed = datetime(2030, 1, 1, tzinfo=UTC)
    assert lease_seconds(claimed + timedelta(seconds=90), claimed) == 90.0
    assert lease_seconds(claimed - timedelta(seconds=5), claimed) == 0.0
