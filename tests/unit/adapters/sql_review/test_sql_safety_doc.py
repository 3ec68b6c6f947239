"""docs/sql-safety.md cannot drift from the classifier: its tables are checked here.

The Examples rows must be corpus entries and classify as the row says; the review rule
table, the dangerous functions and the safe variables must be the ones the code uses.
"""

from __future__ import annotations

import re

from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from domain.server.review_rules import BYPASSABLE_BY_ALLOW_DDL, DEFAULT_RULE_ACTIONS, ReviewRule
from domain.server.sql_classification import DANGEROUS_FUNCTIONS, SAFE_SET_VARIABLES
from tests.data.sql_corpus import load_corpus
from tests.repo import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "sql-safety.md").read_text(encoding="utf-8")
DIALECTS = {"PostgreSQL": "postgresql", "MySQL": "mysql"}
EXAMPLE = re.compile(
    r"^\| (PostgreSQL|MySQL) \| `(.+)` \| (\w+) \| (\w+) \| (.+) \| (\w+) \|$", re.M
)
RULE = re.compile(r"^\| `(\w+)` \| (block|warn|off) \| (yes|no) \| .+ \|$", re.M)


def section(title: str) -> str:
    start = DOC.index(f"\n{title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def test_every_example_in_the_doc_is_a_corpus_entry_with_the_class_hits_and_risk_shown() -> None:
    corpus = {(e.dialect, e.sql): e for e in load_corpus()}
    classifier = SqlglotClassifier()
    rows = EXAMPLE.findall(section("## 9. Examples"))
    assert len(rows) >= 40
    for shown_dialect, sql, kind, operation, shown_hits, risk in rows:
        dialect = DIALECTS[shown_dialect]
        hits = [] if shown_hits == "none" else shown_hits.split(", ")
        entry = corpus[(dialect, sql)]
        expected = (kind, operation, hits, risk)
        assert (entry.kind, entry.operation, list(entry.hits), entry.risk) == expected, sql
        result = classifier.classify(sql, dialect)
        found = sorted({h.rule.value for s in result.statements for h in s.facts.hits})
        assert (result.kind.value, result.operation.value, found) == (kind, operation, hits), sql


def test_the_rule_table_shows_every_rule_with_its_default_and_bypass() -> None:
    rows = RULE.findall(section("## 3. Review rules"))
    assert [name for name, _, _ in rows] == [rule.value for rule in ReviewRule]
    for name, default, bypass in rows:
        rule = ReviewRule(name)
        assert DEFAULT_RULE_ACTIONS[rule].value == default, name
        assert (rule in BYPASSABLE_BY_ALLOW_DDL) == (bypass == "yes"), name


def test_the_doc_lists_exactly_the_dangerous_functions_and_safe_variables() -> None:
    classes = section("## 2. Statement classes and escalations")
    functions = classes[classes.index("**Dangerous functions**") : classes.index("**Safe session")]
    variables = classes[classes.index("**Safe session") : classes.index("**Batches.**")]
    assert set(re.findall(r"`(\w+)`", functions)) - {"pg_catalog"} == DANGEROUS_FUNCTIONS
    assert set(re.findall(r"`(\w+)`", variables)) == SAFE_SET_VARIABLES
