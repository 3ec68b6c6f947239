"""`[[sql_review]]` policies: resolution, the review of a batch, blocks, and validation."""

from __future__ import annotations

from types import MappingProxyType

from domain.server.review_rules import (
    BYPASSABLE_BY_ALLOW_DDL,
    DEFAULT_RULE_ACTIONS,
    ReviewRule,
    RuleAction,
)
from domain.server.sql_classification import StatementClass
from domain.server.sql_review import (
    BUILTIN_REVIEW_POLICY,
    BUILTIN_REVIEW_POLICY_ID,
    SqlReviewPolicy,
    resolve_review_policy,
    review,
    validate_review_policies,
)
from tests.fakes.sql_classifier import batch, delete_from, hit, statement

R = ReviewRule
A = RuleAction


def policy(database: str = "*", environment: str = "*", **rules: RuleAction) -> SqlReviewPolicy:
    return SqlReviewPolicy(
        database, environment, MappingProxyType({ReviewRule(k): v for k, v in rules.items()})
    )


def test_every_rule_has_a_default_and_only_data_safety_rules_resist_allow_ddl() -> None:
    assert set(DEFAULT_RULE_ACTIONS) == set(ReviewRule)
    assert set(ReviewRule) - BYPASSABLE_BY_ALLOW_DDL == {
        R.NO_WHERE_DELETE,
        R.NO_WHERE_UPDATE,
        R.MIXED_DDL_DML,
        R.LARGE_IN_LIST,
    }


def test_the_builtin_policy_applies_the_defaults_under_its_stable_id() -> None:
    assert BUILTIN_REVIEW_POLICY.id == BUILTIN_REVIEW_POLICY_ID == "builtin-default"
    assert BUILTIN_REVIEW_POLICY.effective_rules() == dict(DEFAULT_RULE_ACTIONS)


def test_a_configured_policy_overrides_only_the_rules_it_sets() -> None:
    entry = policy("app", "production", truncate=A.WARN, create_sequence=A.BLOCK)
    assert entry.id == "sr:app:production"
    effective = entry.effective_rules()
    assert effective[R.TRUNCATE] is A.WARN
    assert effective[R.CREATE_SEQUENCE] is A.BLOCK
    assert effective[R.DROP_TABLE] is A.BLOCK  # untouched: the default
    assert list(effective) == list(ReviewRule)


def test_resolution_takes_the_most_specific_entry_else_the_builtin() -> None:
    broad, exact = policy(environment="production"), policy("app", "production")
    assert resolve_review_policy([broad, exact], "app", "production") is exact
    assert resolve_review_policy([broad, exact], "billing", "production") is broad
    assert resolve_review_policy([broad, exact], "app", "staging") is BUILTIN_REVIEW_POLICY


def test_a_block_finding_blocks_and_names_every_blocking_message() -> None:
    classification = batch(
        statement(hits=(hit(R.NO_WHERE_DELETE, "DELETE FROM a has no WHERE clause"),)),
        statement(hits=(hit(R.NO_WHERE_UPDATE, "UPDATE b has no WHERE clause"),)),
        statement(hits=(hit(R.LARGE_IN_LIST, "IN list of 500 items"),)),
    )
    result = review(classification, BUILTIN_REVIEW_POLICY)
    assert result.blocked
    assert [f.rule for f in result.blocking] == [R.NO_WHERE_DELETE, R.NO_WHERE_UPDATE]
    assert [f.rule for f in result.warnings] == [R.LARGE_IN_LIST]
    assert result.block_message() == (
        "SQL blocked by review: statement 1: DELETE FROM a has no WHERE clause; "
        "statement 2: UPDATE b has no WHERE clause"
    )
    assert [f.statement for f in result.findings] == [1, 2, 3]


def test_a_single_statement_message_is_not_numbered() -> None:
    result = review(delete_from("t", hit(R.NO_WHERE_DELETE, "no WHERE")), BUILTIN_REVIEW_POLICY)
    assert result.findings[0].message == "no WHERE"
    assert result.findings[0].to_json() == {
        "code": "no_where_delete",
        "action": "block",
        "message": "no WHERE",
        "statement": 1,
    }


def test_off_rules_never_appear_and_warn_does_not_block() -> None:
    classification = batch(
        statement(StatementClass.DDL, hits=(hit(R.CREATE_SEQUENCE), hit(R.DROP_COLUMN)))
    )
    result = review(classification, BUILTIN_REVIEW_POLICY)
    assert [f.rule for f in result.findings] == [R.DROP_COLUMN]
    assert not result.blocked
    relaxed = review(classification, policy(drop_column=A.OFF))
    assert relaxed.findings == ()
    assert relaxed.policy_id == "sr:*:*"


def test_mixing_schema_and_row_changes_is_a_batch_finding() -> None:
    mixed = batch(statement(StatementClass.DDL), statement(StatementClass.DML))
    (finding,) = review(mixed, BUILTIN_REVIEW_POLICY).findings
    assert finding.rule is R.MIXED_DDL_DML
    assert finding.action is A.WARN
    assert finding.statement is None
    assert review(mixed, policy(mixed_ddl_dml=A.OFF)).findings == ()
    assert review(mixed, policy(mixed_ddl_dml=A.BLOCK)).blocked


def test_allow_ddl_passes_only_schema_change_blocks() -> None:
    ddl = batch(statement(StatementClass.DESTRUCTIVE_DDL, hits=(hit(R.DROP_TABLE),)))
    assert review(ddl, BUILTIN_REVIEW_POLICY).blocked_under_allow_ddl() == ()
    dml = delete_from("t", hit(R.NO_WHERE_DELETE))
    still = review(dml, BUILTIN_REVIEW_POLICY).blocked_under_allow_ddl()
    assert [f.rule for f in still] == [R.NO_WHERE_DELETE]


def test_validation_refuses_the_reserved_any_and_a_repeated_scope() -> None:
    problems = validate_review_policies(
        [policy("any"), policy("app", "production"), policy("app", "production")]
    )
    assert [(p.key, p.message.split(";")[0]) for p in problems] == [
        (("sql_review", 2), problems[0].message.split(";")[0]),
        (("sql_review", 0, "database"), "'any' is reserved"),
    ]
    assert "sql_review[1]" in problems[0].message


def test_validation_accepts_distinct_scopes() -> None:
    assert validate_review_policies([policy(), policy("app"), policy("app", "staging")]) == ()
