"""Risk scoring (docs/sql-safety.md §4): every factor, the order of the checks, and the
fail-closed choices (unknown tables and row counts, ambiguous names, parse failures)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.server.review_rules import ReviewRule
from domain.server.risk import (
    RiskAssessment,
    RiskFactor,
    RiskPolicy,
    SchemaStatus,
    assess_risk,
)
from domain.server.schema_model import SchemaModel
from domain.server.sql_classification import Classification, StatementClass
from domain.server.sql_review import BUILTIN_REVIEW_POLICY, review
from domain.server.workflows import AutoApprove, AutoApproveMode, RiskLevel
from domain.shared.operations import Operation
from tests.fakes.sql_classifier import batch, delete_from, hit, statement
from tests.unit.domain.server.test_schema_model import table

R = ReviewRule
LOW, MEDIUM, HIGH = RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH
POLICY = RiskPolicy(max_estimated_rows=1000)


def schema(*tables: dict[str, Any]) -> SchemaModel:
    return SchemaModel.from_snapshot({"tables": list(tables)})


DEFAULT_SCHEMA = schema(table("small", 10), table("big", 5000))


def assess(
    classification: Classification,
    *,
    policy: RiskPolicy = POLICY,
    model: SchemaModel | None = DEFAULT_SCHEMA,
    status: SchemaStatus = SchemaStatus.READY,
) -> RiskAssessment:
    result = assess_risk(
        classification.operation,
        classification,
        None if classification.parse_failed else review(classification, BUILTIN_REVIEW_POLICY),
        policy=policy,
        schema_status=status,
        schema=model,
    )
    assert result is not None
    return result


def codes(assessment: RiskAssessment) -> list[str]:
    return [f.code for f in assessment.factors]


def select(*tables: str) -> Classification:
    return batch(statement(StatementClass.SELECT, tables=tables))


def update(*tables: str, hits: tuple[Any, ...] = ()) -> Classification:
    return batch(statement(tables=tables, hits=hits))


def test_the_policy_comes_from_the_workflow_and_is_all_off_without_one() -> None:
    rule = AutoApprove(
        AutoApproveMode.RISK_BASED, RiskLevel.LOW, allow_read_only=False, max_estimated_rows=5
    )
    assert RiskPolicy.of(rule) == RiskPolicy(False, True, 5)
    assert RiskPolicy.of(None) == RiskPolicy(False, False, 1000)


def test_migrations_are_not_assessed() -> None:
    risk = assess_risk(
        Operation.MIGRATE_UP,
        None,
        None,
        policy=POLICY,
        schema_status=SchemaStatus.READY,
        schema=DEFAULT_SCHEMA,
    )
    assert risk is None


def test_a_parse_failure_is_unavailable() -> None:
    failed = batch(statement(StatementClass.PARSE_FAILURE))
    assert assess(failed) == RiskAssessment(RiskLevel.UNAVAILABLE, (RiskFactor("not_verifiable"),))


def test_a_read_only_query_is_low_when_the_workflow_allows_it_even_without_a_schema() -> None:
    policy = RiskPolicy(allow_read_only=True)
    result = assess(select("big"), policy=policy, model=None, status=SchemaStatus.NOT_SYNCED)
    assert (result.level, codes(result)) == (LOW, ["read_only"])


def test_a_read_only_query_is_scored_like_anything_else_when_not_allowed() -> None:
    result = assess(select("big"))
    assert (result.level, codes(result)) == (MEDIUM, ["large_table"])


def test_safe_ddl_is_low_when_allowed_and_without_findings() -> None:
    create = batch(statement(StatementClass.DDL, tables=("new_t",), safe_ddl=True))
    allowed = RiskPolicy(allow_safe_ddl=True)
    result = assess(create, policy=allowed, model=None, status=SchemaStatus.NOT_SYNCED)
    assert (result.level, codes(result)) == (LOW, ["safe_ddl"])
    # Not allowed: scored, and the new table is unknown to the snapshot.
    assert codes(assess(create)) == ["unknown_table"]


def test_safe_ddl_with_a_finding_is_scored() -> None:
    create = batch(
        statement(
            StatementClass.DDL,
            tables=("small",),
            safe_ddl=True,
            hits=(hit(R.NOT_NULL_WITHOUT_DEFAULT),),
        )
    )
    result = assess(create, policy=RiskPolicy(allow_safe_ddl=True))
    assert (result.level, codes(result)) == (MEDIUM, ["review_warnings"])


def test_two_safe_ddl_statements_are_not_safe_ddl_but_several_changes() -> None:
    two = batch(
        statement(StatementClass.DDL, tables=("small",), safe_ddl=True),
        statement(StatementClass.DDL, tables=("small",), safe_ddl=True),
    )
    result = assess(two, policy=RiskPolicy(allow_safe_ddl=True))
    assert (result.level, codes(result)) == (HIGH, ["multi_statement"])


@pytest.mark.parametrize("status", [SchemaStatus.NOT_SYNCED, SchemaStatus.FAILED])
def test_without_a_usable_snapshot_risk_is_unknown(status: SchemaStatus) -> None:
    result = assess(update("small"), model=None, status=status)
    assert result == RiskAssessment(
        RiskLevel.UNKNOWN, (RiskFactor("schema_not_synced", status.value),)
    )


def test_a_small_known_table_is_low() -> None:
    result = assess(update("small"))
    assert (result.level, result.factors) == (LOW, ())


def test_a_table_over_max_estimated_rows_is_medium() -> None:
    result = assess(update("big"))
    assert result.level is MEDIUM
    assert result.factors == (RiskFactor("large_table", "public.big ~5000 rows"),)
    raised = assess(update("big"), policy=RiskPolicy(max_estimated_rows=5000))
    assert raised.level is LOW  # at the limit is not over it


def test_an_unknown_table_is_medium() -> None:
    result = assess(update("nowhere"))
    assert (result.level, result.factors) == (MEDIUM, (RiskFactor("unknown_table", "nowhere"),))


def test_an_unknown_row_count_is_medium() -> None:
    result = assess(update("fresh"), model=schema(table("fresh", None)))
    assert (result.level, codes(result)) == (MEDIUM, ["unknown_row_count"])


def test_an_ambiguous_unqualified_name_takes_the_worst_table() -> None:
    two = schema(table("t", 5, schema="a"), table("t", 50_000, schema="b"))
    result = assess(update("t"), model=two)
    assert result.level is MEDIUM
    assert result.factors == (RiskFactor("large_table", "b.t ~50000 rows"),)
    assert assess(update("a.t"), model=two).level is LOW


def test_several_writing_statements_are_high() -> None:
    two = batch(statement(tables=("small",)), statement(tables=("small",)))
    result = assess(two)
    assert (result.level, result.factors) == (
        HIGH,
        (RiskFactor("multi_statement", "2 statements"),),
    )


def test_safe_sets_before_a_query_are_not_multi_statement() -> None:
    query = batch(
        statement(StatementClass.SELECT, text="SET x", is_safe_set=True),
        statement(StatementClass.SELECT, tables=("small",)),
    )
    assert query.operation is Operation.EXECUTE_SELECT
    assert assess(query).level is LOW


@pytest.mark.parametrize(
    ("count", "level", "code"),
    [(1, MEDIUM, "review_warnings"), (2, MEDIUM, "review_warnings"), (3, HIGH, "many_warnings")],
)
def test_warnings_raise_to_medium_and_three_or_more_to_high(
    count: int, level: RiskLevel, code: str
) -> None:
    hits = tuple(hit(R.LARGE_IN_LIST, f"list {i}") for i in range(count))
    result = assess(update("small", hits=hits))
    assert result.level is level
    assert result.factors == (RiskFactor(code, f"{count} finding{'' if count == 1 else 's'}"),)


@pytest.mark.parametrize(
    "rule", [R.DROP_TABLE, R.TRUNCATE, R.DROP_INDEX, R.DROP_VIEW, R.DROP_SEQUENCE]
)
def test_dropping_something_is_high(rule: ReviewRule) -> None:
    drop = batch(statement(StatementClass.DESTRUCTIVE_DDL, tables=("small",), hits=(hit(rule),)))
    result = assess(drop)
    assert result.level is HIGH
    assert RiskFactor("drop_operation", rule.value) in result.factors


def test_a_delete_without_cascade_children_is_sized_like_any_table() -> None:
    assert assess(delete_from("small")).level is LOW
    assert codes(assess(delete_from("big"))) == ["large_table"]


def _family(parent_rows: int | None, child_rows: int | None) -> SchemaModel:
    return schema(table("p", parent_rows), table("c", child_rows, cascades_from=("p",)))


def test_a_delete_cascading_into_small_children_is_medium() -> None:
    result = assess(delete_from("p"), model=_family(10, 20))
    assert result.level is MEDIUM
    assert result.factors == (RiskFactor("cascade_delete", "public.p → public.c (depth 1)"),)


@pytest.mark.parametrize(
    ("parent_rows", "child_rows", "extra"),
    [
        (10, 5000, []),
        (10, None, []),
        (5000, 10, ["large_table"]),
        (None, 10, ["unknown_row_count"]),
    ],
)
def test_a_delete_cascading_with_a_large_or_unknown_side_is_high(
    parent_rows: int | None, child_rows: int | None, extra: list[str]
) -> None:
    result = assess(delete_from("p"), model=_family(parent_rows, child_rows))
    assert result.level is HIGH
    assert sorted(codes(result)) == sorted(["cascade_delete", *extra])


def test_a_cascade_reaching_past_depth_three_is_high_and_says_so() -> None:
    chain = [table("t0")] + [table(f"t{i}", cascades_from=(f"t{i - 1}",)) for i in range(1, 5)]
    result = assess(delete_from("t0"), model=schema(*chain))
    assert result.level is HIGH
    (factor,) = result.factors
    assert factor.code == "cascade_delete"
    assert "public.t3 (depth 3)" in factor.detail
    assert factor.detail.endswith("; more beyond depth 3")


def test_a_cascade_that_ends_at_depth_three_is_only_medium() -> None:
    chain = [table("t0")] + [table(f"t{i}", cascades_from=(f"t{i - 1}",)) for i in range(1, 4)]
    assert assess(delete_from("t0"), model=schema(*chain)).level is MEDIUM


def test_a_table_only_read_by_a_delete_is_not_followed_for_cascades() -> None:
    using = batch(statement(tables=("small", "p"), deletes=("small",)))
    result = assess(using, model=schema(table("small", 1), *_family_tables()))
    assert (result.level, result.factors) == (LOW, ())


def _family_tables() -> list[dict[str, Any]]:
    return [table("p", 10), table("c", 20, cascades_from=("p",))]


def test_an_ambiguous_delete_target_follows_the_cascades_of_every_candidate() -> None:
    model = schema(
        table("p", 10, schema="a"),
        table("p", 10, schema="b"),
        table("c", 20, schema="b", cascades_from=("p",)),
    )
    result = assess(delete_from("p"), model=model)
    assert result.level is MEDIUM
    assert codes(result) == ["cascade_delete"]


def test_factors_accumulate_and_the_level_is_the_highest() -> None:
    two = batch(
        statement(tables=("big", "nowhere"), hits=(hit(R.LARGE_IN_LIST),)),
        statement(tables=("big",)),
    )
    result = assess(two)
    assert result.level is HIGH
    assert codes(result) == ["multi_statement", "review_warnings", "large_table", "unknown_table"]


def test_the_assessment_serialises_level_and_factors() -> None:
    assert RiskAssessment(MEDIUM, (RiskFactor("large_table", "t ~5 rows"),)).to_json() == {
        "level": "medium",
        "factors": [{"code": "large_table", "detail": "t ~5 rows"}],
    }
    assert str(RiskFactor("x", "y")) == "x (y)"
    assert str(RiskFactor("x")) == "x"


def test_a_change_that_names_no_table_is_medium() -> None:
    call = batch(statement(StatementClass.DML))
    result = assess(call)
    assert (result.level, result.factors) == (
        MEDIUM,
        (RiskFactor("unknown_targets", "statement 1"),),
    )


def test_a_query_that_names_no_table_is_low() -> None:
    assert assess(select()).level is LOW
