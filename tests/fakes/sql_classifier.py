"""A classifier that answers scripted verdicts with statement facts, and helpers to build them.

The facts (tables, delete targets, review hits) are what a parser adapter reports; these
let review, risk and the create path be tested on exactly the facts a test names.
"""

from __future__ import annotations

from application.server.ports.services import SqlClassifier
from domain.server.review_rules import ReviewHit, ReviewRule
from domain.server.sql_classification import (
    Classification,
    ClassifiedStatement,
    StatementClass,
    StatementFacts,
    TableRef,
    classify_batch,
)


def hit(rule: ReviewRule, message: str | None = None) -> ReviewHit:
    return ReviewHit(rule, message or f"{rule.value} tripped")


def statement(
    kind: StatementClass = StatementClass.DML,
    *,
    tables: tuple[str, ...] = (),
    deletes: tuple[str, ...] = (),
    hits: tuple[ReviewHit, ...] = (),
    writes_rows: bool | None = None,
    safe_ddl: bool = False,
    break_glass_ddl: bool = False,
    text: str = "stmt",
    is_safe_set: bool = False,
) -> ClassifiedStatement:
    """A statement; table names may be `schema.name`."""
    return ClassifiedStatement(
        text=text,
        kind=kind,
        reason=kind.value,
        is_safe_set=is_safe_set,
        facts=StatementFacts(
            tables=tuple(ref(t) for t in tables),
            delete_targets=tuple(ref(t) for t in deletes),
            hits=hits,
            writes_rows=kind is StatementClass.DML if writes_rows is None else writes_rows,
            safe_ddl=safe_ddl,
            break_glass_ddl=break_glass_ddl,
        ),
    )


def ref(text: str) -> TableRef:
    schema, _, name = text.rpartition(".")
    return TableRef(name, schema or None)


def batch(*statements: ClassifiedStatement) -> Classification:
    return classify_batch(statements)


def delete_from(table: str, *hits: ReviewHit) -> Classification:
    return batch(statement(tables=(table,), deletes=(table,), hits=hits))


class ScriptedClassifier:
    """Answers `script`ed SQL with its classification; anything else goes to `inner`."""

    def __init__(self, inner: SqlClassifier) -> None:
        self._inner = inner
        self._scripted: dict[str, Classification] = {}

    def script(self, sql: str, *statements: ClassifiedStatement) -> None:
        """`sql` classifies as these statements (their text defaults to `sql` itself)."""
        self._scripted[sql] = batch(
            *(s if s.text != "stmt" else _with_text(s, sql) for s in statements)
        )

    def classify(self, sql: str, dialect: str) -> Classification:
        scripted = self._scripted.get(sql)
        return scripted if scripted is not None else self._inner.classify(sql, dialect)

    def redact(self, sql: str, dialect: str) -> str:
        return self._inner.redact(sql, dialect)


def _with_text(statement: ClassifiedStatement, text: str) -> ClassifiedStatement:
    return ClassifiedStatement(
        text=text,
        kind=statement.kind,
        reason=statement.reason,
        is_safe_set=statement.is_safe_set,
        facts=statement.facts,
    )
