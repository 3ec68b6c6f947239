"""Risk scoring of a SQL request from its review and the live schema.

docs/sql-safety.md §4. The score decides `risk_based` auto-approval (a known risk at or
below the workflow's threshold approves) and tells approvers why a request is risky. The
inputs are the classified batch, its review findings, the matched workflow's
`auto_approve` knobs and the latest schema snapshot an agent uploaded for the scope.

Order of the checks (the first two end scoring):
1. a read-only query scores low when the workflow allows read-only auto-approval;
2. one safe DDL statement with no findings scores low when it allows safe DDL;
3. without a usable snapshot nothing else can be judged: unknown (never auto-approves);
4. otherwise start low and raise: several statements that write (high), review warnings
   (medium, three or more high), a drop (high), a table over `max_estimated_rows`
   (medium), a DELETE whose ON DELETE CASCADE children are large or reach past depth 3
   (high) or small (medium), and, ours, a table the snapshot does not know or whose row
   count it does not know, or a statement other than a query that names no table the
   parser could read (medium): scoring never treats what it cannot see as small.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from domain.server.review_rules import DROP_RULES
from domain.server.schema_model import SchemaModel, SnapshotTable
from domain.server.sql_classification import Classification, StatementClass
from domain.server.sql_review import Finding, Review
from domain.server.workflows import AutoApprove, RiskLevel
from domain.shared.operations import Operation

__all__ = [
    "DEFAULT_MAX_ESTIMATED_ROWS",
    "RiskAssessment",
    "RiskFactor",
    "RiskPolicy",
    "SchemaStatus",
    "assess_risk",
]

DEFAULT_MAX_ESTIMATED_ROWS = 1000
#: Review findings from which risk is high rather than medium.
MANY_FINDINGS = 3


class SchemaStatus(StrEnum):
    """The state of the scope's schema snapshot when the request was judged."""

    READY = "ready"
    FAILED = "failed"  # the agent reported an error, a partial snapshot, or one we cannot read
    NOT_SYNCED = "not_synced"  # no agent has reported one yet


@dataclass(frozen=True)
class RiskFactor:
    """Why a level was reached: a stable `code` and the detail a person reads."""

    code: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code} ({self.detail})" if self.detail else self.code

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class RiskAssessment:
    level: RiskLevel
    factors: tuple[RiskFactor, ...]

    def to_json(self) -> dict[str, object]:
        return {"level": self.level.value, "factors": [f.to_json() for f in self.factors]}


@dataclass(frozen=True)
class RiskPolicy:
    """The knobs of the matched workflow's `auto_approve`; all off without one."""

    allow_read_only: bool = False
    allow_safe_ddl: bool = False
    max_estimated_rows: int = DEFAULT_MAX_ESTIMATED_ROWS

    @classmethod
    def of(cls, rule: AutoApprove | None) -> RiskPolicy:
        if rule is None:
            return cls()
        return cls(rule.allow_read_only, rule.allow_safe_ddl, rule.max_estimated_rows)


def assess_risk(
    operation: Operation,
    classification: Classification | None,
    review: Review | None,
    *,
    policy: RiskPolicy,
    schema_status: SchemaStatus,
    schema: SchemaModel | None,
) -> RiskAssessment | None:
    """The risk of a request; None for migrations, which are not assessed (they are
    reviewed as files, and only an `always` workflow auto-approves them)."""
    if operation.is_migration or classification is None:
        return None
    if classification.parse_failed or classification.is_rejected:
        return RiskAssessment(RiskLevel.UNAVAILABLE, (RiskFactor("not_verifiable"),))
    if operation is Operation.EXECUTE_SELECT and policy.allow_read_only:
        return RiskAssessment(RiskLevel.LOW, (RiskFactor("read_only"),))
    findings = review.findings if review is not None else ()
    if policy.allow_safe_ddl and classification.is_safe_ddl_candidate and not findings:
        return RiskAssessment(RiskLevel.LOW, (RiskFactor("safe_ddl"),))
    if schema_status is not SchemaStatus.READY or schema is None:
        return RiskAssessment(
            RiskLevel.UNKNOWN, (RiskFactor("schema_not_synced", schema_status.value),)
        )
    return _Scorer(policy.max_estimated_rows).score(classification, findings, schema, operation)


#: Ours: classes whose risk no table size can tell. A dangerous function acts outside the
#: rows it names (it can end sessions, read files, sleep, take locks), a statement we do not
#: recognise cannot be judged at all, and a query escalated for its locks or its INTO
#: writes or blocks what it reads.
_CLASS_FLOORS = {
    StatementClass.DANGEROUS_FUNCTION: (RiskLevel.HIGH, "dangerous_function"),
    StatementClass.UNKNOWN: (RiskLevel.UNKNOWN, "unrecognised_statement"),
    StatementClass.SEMANTIC_ESCALATION: (RiskLevel.MEDIUM, "escalated_query"),
}


class _Scorer:
    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self.level = RiskLevel.LOW
        self.factors: list[RiskFactor] = []

    def raise_to(self, level: RiskLevel, factor: RiskFactor) -> None:
        if level.rank > self.level.rank:
            self.level = level
        if factor not in self.factors:
            self.factors.append(factor)

    def score(
        self,
        classification: Classification,
        findings: tuple[Finding, ...],
        schema: SchemaModel,
        operation: Operation,
    ) -> RiskAssessment:
        writes = operation is Operation.EXECUTE_DML
        if classification.statement_count > 1 and writes:
            self.raise_to(
                RiskLevel.HIGH,
                RiskFactor("multi_statement", f"{classification.statement_count} statements"),
            )
        count = len(findings)
        if count >= MANY_FINDINGS:
            self.raise_to(RiskLevel.HIGH, RiskFactor("many_warnings", f"{count} findings"))
        elif count:
            self.raise_to(
                RiskLevel.MEDIUM,
                RiskFactor(
                    "review_warnings", f"{count} finding" if count == 1 else f"{count} findings"
                ),
            )
        dropped = sorted({f.rule.value for f in findings if f.rule in DROP_RULES})
        if dropped:
            self.raise_to(RiskLevel.HIGH, RiskFactor("drop_operation", ", ".join(dropped)))
        for index, statement in enumerate(classification.statements, 1):
            floor = _CLASS_FLOORS.get(statement.kind)
            if floor is not None:
                level, code = floor
                self.raise_to(level, RiskFactor(code, f"statement {index}: {statement.reason}"))
            if statement.kind is not StatementClass.SELECT and not statement.facts.tables:
                # Ours: a change whose tables the parser could not name is not small.
                self.raise_to(RiskLevel.MEDIUM, RiskFactor("unknown_targets", f"statement {index}"))
        deleted = set(classification.delete_targets)
        for ref in classification.tables:
            found = schema.find(ref)
            if not found:
                self.raise_to(RiskLevel.MEDIUM, RiskFactor("unknown_table", str(ref)))
                continue
            for table in found:
                if ref in deleted:
                    self._deleted(table, schema)
                else:
                    self._sized(table)
        return RiskAssessment(self.level, tuple(self.factors))

    def _sized(self, table: SnapshotTable) -> None:
        rows = table.estimated_rows
        if rows is None:
            self.raise_to(RiskLevel.MEDIUM, RiskFactor("unknown_row_count", str(table.ref)))
        elif rows > self._max_rows:
            self.raise_to(RiskLevel.MEDIUM, RiskFactor("large_table", f"{table.ref} ~{rows} rows"))

    def _deleted(self, table: SnapshotTable, schema: SchemaModel) -> None:
        self._sized(table)
        impact = schema.cascade(table)
        if not impact.children:
            return
        sizes = [c.table.estimated_rows for c in impact.children]
        big = (
            any(rows is None or rows > self._max_rows for rows in sizes)
            or table.estimated_rows is None
            or table.estimated_rows > self._max_rows
        )
        level = RiskLevel.HIGH if big or impact.truncated else RiskLevel.MEDIUM
        reached = ", ".join(f"{c.table.ref} (depth {c.depth})" for c in impact.children)
        more = "; more beyond depth 3" if impact.truncated else ""
        self.raise_to(level, RiskFactor("cascade_delete", f"{table.ref} → {reached}{more}"))
