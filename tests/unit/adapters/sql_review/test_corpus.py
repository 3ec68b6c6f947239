"""Every entry of the SQL corpus (tests/data/sql_corpus.yaml) classifies as it says.

The corpus is the reviewable list of what the classifier does with real-looking SQL in
both dialects: bypass attempts, escalations, the statement limit, and the review rules
each statement trips.
"""

from __future__ import annotations

import re

import pytest

from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from domain.server.review_rules import ReviewRule
from domain.server.risk import RiskPolicy, SchemaStatus, assess_risk
from domain.server.schema_model import SchemaModel
from domain.server.sql_classification import StatementClass
from domain.server.sql_review import BUILTIN_REVIEW_POLICY, review
from domain.shared.operations import Operation
from tests.data.sql_corpus import CorpusEntry, corpus_snapshot, corpus_workflow, load_corpus

CORPUS = load_corpus()
classifier = SqlglotClassifier()


@pytest.mark.parametrize("entry", CORPUS, ids=[e.label for e in CORPUS])
def test_corpus_entry_classifies_as_expected(entry: CorpusEntry) -> None:
    result = classifier.classify(entry.text, entry.dialect)
    hits = sorted({hit.rule.value for s in result.statements for hit in s.facts.hits})
    assert (result.kind.value, result.operation.value, hits) == (
        entry.kind,
        entry.operation,
        list(entry.hits),
    ), [s.reason for s in result.statements] or result.rejected_reason


_WORKFLOW = corpus_workflow()
_RISK_POLICY = RiskPolicy(
    allow_read_only=_WORKFLOW["allow_read_only"],
    allow_safe_ddl=_WORKFLOW["allow_safe_ddl"],
    max_estimated_rows=_WORKFLOW["max_estimated_rows"],
)
_SCHEMAS = {d: SchemaModel.from_snapshot(corpus_snapshot(d)) for d in ("postgresql", "mysql")}


@pytest.mark.parametrize("entry", CORPUS, ids=[e.label for e in CORPUS])
def test_corpus_entry_has_its_findings_and_risk_under_the_default_policy(
    entry: CorpusEntry,
) -> None:
    result = classifier.classify(entry.text, entry.dialect)
    findings = None if result.parse_failed else review(result, BUILTIN_REVIEW_POLICY)
    codes = sorted({f.rule.value for f in findings.findings}) if findings else []
    risk = assess_risk(
        result.operation,
        result,
        findings,
        policy=_RISK_POLICY,
        schema_status=SchemaStatus.READY,
        schema=_SCHEMAS[entry.dialect],
    )
    assert risk is not None
    assert (codes, risk.level.value) == (sorted(entry.findings), entry.risk), [
        str(f) for f in risk.factors
    ]


def test_corpus_covers_both_dialects_every_class_and_every_statement_rule() -> None:
    assert len(CORPUS) >= 300
    assert {e.dialect for e in CORPUS} == {"postgresql", "mysql"}
    assert {e.kind for e in CORPUS} == {k.value for k in StatementClass}
    assert {e.operation for e in CORPUS} == {Operation.EXECUTE_SELECT, Operation.EXECUTE_DML}
    per_statement_rules = {r.value for r in ReviewRule} - {ReviewRule.MIXED_DDL_DML.value}
    assert {hit for e in CORPUS for hit in e.hits} == per_statement_rules
    assert all(e.risk is not None for e in CORPUS)


def test_hit_messages_never_quote_a_literal_of_the_corpus() -> None:
    for entry in CORPUS:
        result = classifier.classify(entry.text, entry.dialect)
        literals = set(re.findall(r"'([^']{2,})'", entry.sql))
        for statement in result.statements:
            for hit in statement.facts.hits:
                assert not any(value in hit.message for value in literals), hit.message


def test_corpus_holds_the_statement_limit_on_both_sides() -> None:
    repeats = {(e.repeat, e.kind) for e in CORPUS if e.repeat > 1}
    assert (100, "dml") in repeats
    assert (101, "rejected") in repeats
