"""Hand-built classified batches for the review and risk tests: the facts a parser would report."""

from __future__ import annotations

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
