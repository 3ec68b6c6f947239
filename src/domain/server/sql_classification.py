"""What a submitted SQL text is, before anyone approves it (docs/server.md §5.1-§5.3).

A parser adapter (`adapters.sql_review.sqlglot_classifier`) cuts the text into statements and gives
each one a `StatementClass`; this module owns the rules that do not need a parser: the
pre-parse limits, the escalation order of a batch, the multi-statement rules, and the
execution plan.

The execution plan is our improvement over dbward 0.2 (§11.12): it holds the *exact
source text* of each statement, not a parser's re-serialisation, so what the agent runs
(the statements joined with `";\\n"`) is byte for byte what the approver read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from domain.server.review_rules import ReviewHit
from domain.shared.operations import Operation

__all__ = [
    "DANGEROUS_FUNCTIONS",
    "EMPTY_QUERY",
    "ESCALATION_ORDER",
    "MAX_SQL_BYTES",
    "MAX_STATEMENTS",
    "PARSE_FAILED",
    "REDACTION_FAILED",
    "SAFE_SET_VARIABLES",
    "Classification",
    "ClassifiedStatement",
    "StatementClass",
    "StatementFacts",
    "TableRef",
    "classify_batch",
    "execution_plan_json",
    "pre_parse_rejection",
]

#: Inputs larger than this are rejected before parsing (the HTTP layer caps lower still).
MAX_SQL_BYTES = 1_048_576
#: A batch may hold at most this many statements.
MAX_STATEMENTS = 100

EMPTY_QUERY = "empty query"
#: The create path answers a parse failure with 400 and this message.
PARSE_FAILED = "SQL could not be parsed; cannot verify safety rules"
#: What `redact` returns for SQL it cannot parse (audit records never carry raw SQL).
REDACTION_FAILED = "<redaction-failed: unparseable SQL>"

#: Calls that escalate a query to DML, matched on the last name part, lower-cased (§5.2).
DANGEROUS_FUNCTIONS: frozenset[str] = frozenset(
    {
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "lo_export",
        "lo_import",
        "lo_unlink",
        "lo_create",
        "lo_creat",
        "lo_from_bytea",
        "lo_put",
        "lo_truncate",
        "lo_truncate64",
        "lowrite",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_execute_server_program",
        "copy_to",
        "copy_from",
        "set_config",
        "pg_cancel_backend",
        "pg_terminate_backend",
        "pg_sleep",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_notify",
        "nextval",
        "setval",
        "sys_exec",
        "sys_eval",
        "load_file",
        "sleep",
        "benchmark",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "is_free_lock",
        "is_used_lock",
    }
)

#: Session variables a read-only batch may SET before its query (§5.2), lower-cased.
SAFE_SET_VARIABLES: frozenset[str] = frozenset(
    {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "timezone",
        "datestyle",
        "client_encoding",
        "application_name",
        "extra_float_digits",
        "autocommit",
        "sql_mode",
        "character_set_client",
        "wait_timeout",
    }
)

# Markers a database reads as code although a parser reads them as comments: MySQL and
# MariaDB executable comments, and sqlglot's Jinja comment (plain text to both databases).
_HIDDEN_CODE_MARKERS = (
    ("/*!", "MySQL executable comments (/*! ... */) are not allowed"),
    ("/*m!", "MariaDB executable comments (/*M! ... */) are not allowed"),
    ("{#", "'{#' is not allowed: the parser would read it as a comment, the database not"),
)


class StatementClass(StrEnum):
    """The class of one statement, and of a batch (its worst statement).

    `SELECT` is the only class that runs as `execute_select`; every other one is
    `execute_dml` and needs whatever approval the workflow asks for. `REJECTED` is refused
    outright (400), as is a `PARSE_FAILURE`. The spec's DML sub-reasons are their own
    members so that a batch can be ranked: `DML` is a plain INSERT/UPDATE/DELETE/MERGE/
    COPY/CALL/NOTIFY/LISTEN (or a query that writes through a CTE), `DANGEROUS_FUNCTION`
    and `SEMANTIC_ESCALATION` are queries escalated by what they contain, `UNKNOWN` is
    whatever could not be recognised (fail closed).
    """

    SELECT = "select"
    DDL = "ddl"
    DESTRUCTIVE_DDL = "destructive_ddl"
    PARSE_FAILURE = "parse_failure"
    UNKNOWN = "unknown"
    SEMANTIC_ESCALATION = "semantic_escalation"
    DANGEROUS_FUNCTION = "dangerous_function"
    DML = "dml"
    REJECTED = "rejected"

    @property
    def rank(self) -> int:
        """Position in the escalation order: a batch takes its highest-ranked statement."""
        return _RANK[self]

    @property
    def is_ddl(self) -> bool:
        return self in (StatementClass.DDL, StatementClass.DESTRUCTIVE_DDL)


#: §5.2 "Batch result", worst first.
ESCALATION_ORDER: tuple[StatementClass, ...] = (
    StatementClass.REJECTED,
    StatementClass.DML,
    StatementClass.DANGEROUS_FUNCTION,
    StatementClass.SEMANTIC_ESCALATION,
    StatementClass.UNKNOWN,
    StatementClass.PARSE_FAILURE,
    StatementClass.DESTRUCTIVE_DDL,
    StatementClass.DDL,
    StatementClass.SELECT,
)
_RANK = {kind: len(ESCALATION_ORDER) - i for i, kind in enumerate(ESCALATION_ORDER)}


@dataclass(frozen=True, order=True)
class TableRef:
    """A table (or view) a statement names; `schema` is None when the name is unqualified.

    Names are as the parser resolved them: an unquoted name in the case the database
    folds it to (lower case in PostgreSQL), a quoted one exactly as written.
    """

    name: str
    schema: str | None = None

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class StatementFacts:
    """What a statement touches and trips, as the parser read it: the input of review and risk.

    `tables` are every table the statement reads or writes (CTE names excluded), in order
    of appearance without repeats; `delete_targets` the tables it deletes rows from (risk
    follows their ON DELETE CASCADE children). `hits` are the review rules it trips, before
    any policy decides what they mean. `writes_rows` marks INSERT/UPDATE/DELETE/MERGE (with
    DDL in the same batch: `mixed_ddl_dml`), `safe_ddl` a statement that is safe DDL on its
    own (docs/sql-safety.md §4: CREATE TABLE or VIEW without OR REPLACE or AS SELECT,
    CREATE INDEX CONCURRENTLY, ALTER TABLE that only adds columns). `break_glass_ddl`
    marks schema DDL refused only for the kind of object it changes (CREATE SCHEMA, DROP
    FUNCTION, ALTER VIEW…): an operator's break-glass request with `allow_ddl` may run it;
    transaction control, privileges, roles, SET and LOAD are never eligible.
    """

    tables: tuple[TableRef, ...] = ()
    delete_targets: tuple[TableRef, ...] = ()
    hits: tuple[ReviewHit, ...] = ()
    writes_rows: bool = False
    safe_ddl: bool = False
    break_glass_ddl: bool = False


@dataclass(frozen=True)
class ClassifiedStatement:
    """One statement of a batch.

    `text` is the exact source slice: leading comments and everything up to the last
    token are kept, the separating semicolon and any comment after the last token are not
    (a trailing `--` comment would swallow the `;` the agent joins statements with).
    `reason` says in words why the statement got its class. `is_safe_set` marks a SET of
    a safe session variable, which a read-only batch may run before its query.
    """

    text: str
    kind: StatementClass
    reason: str
    is_safe_set: bool = False
    facts: StatementFacts = StatementFacts()

    def __post_init__(self) -> None:
        if self.is_safe_set and self.kind is not StatementClass.SELECT:
            raise ValueError("only a SELECT-class statement can be a safe SET")


@dataclass(frozen=True)
class Classification:
    """The verdict on a whole submitted text.

    `kind` is the worst statement class (a violated multi-statement rule makes it
    `REJECTED`). `rejected_reason` is set whenever `kind` is `REJECTED`; `parse_failed`
    whenever any statement could not be parsed. The create path refuses both with 400
    (break-glass may bypass some rejections, never a parse failure).
    """

    operation: Operation
    kind: StatementClass
    statements: tuple[ClassifiedStatement, ...]
    is_ddl_only: bool
    contains_ddl: bool
    rejected_reason: str | None
    parse_failed: bool

    @classmethod
    def rejected(cls, reason: str) -> Classification:
        """A text refused before it was cut into statements (limits, hidden code)."""
        return cls(
            operation=Operation.EXECUTE_DML,
            kind=StatementClass.REJECTED,
            statements=(),
            is_ddl_only=False,
            contains_ddl=False,
            rejected_reason=reason,
            parse_failed=False,
        )

    @property
    def is_rejected(self) -> bool:
        return self.rejected_reason is not None

    @property
    def statement_count(self) -> int:
        return len(self.statements)

    @property
    def tables(self) -> tuple[TableRef, ...]:
        """Every table the batch names, in order of appearance, without repeats."""
        return tuple(dict.fromkeys(t for s in self.statements for t in s.facts.tables))

    @property
    def delete_targets(self) -> tuple[TableRef, ...]:
        """Every table the batch deletes rows from, without repeats."""
        return tuple(dict.fromkeys(t for s in self.statements for t in s.facts.delete_targets))

    @property
    def writes_rows(self) -> bool:
        return any(s.facts.writes_rows for s in self.statements)

    @property
    def mixes_ddl_and_dml(self) -> bool:
        """Schema changes and row writes in one batch (`mixed_ddl_dml`)."""
        return self.contains_ddl and self.writes_rows

    @property
    def break_glass_ddl_only(self) -> bool:
        """Every statement is DDL, or DDL refused only for its object kind: a rejection
        that break-glass with `allow_ddl` may override (docs/sql-safety.md §6)."""
        return bool(self.statements) and all(
            s.kind.is_ddl or (s.kind is StatementClass.REJECTED and s.facts.break_glass_ddl)
            for s in self.statements
        )

    @property
    def is_safe_ddl_candidate(self) -> bool:
        """One statement that is safe DDL on its own (review findings are checked apart)."""
        return len(self.statements) == 1 and self.statements[0].facts.safe_ddl


def pre_parse_rejection(sql: str) -> str | None:
    """The §5.1 limits a text must pass before any parser sees it, or None.

    Executable comments are rejected in both dialects: PostgreSQL has none, so there they
    are never legitimate. The check is on the raw text (a string literal holding `/*!` is
    refused too): simple beats clever in front of a parser differential.
    """
    if "\x00" in sql:
        return "SQL contains a NUL byte"
    if not sql.strip():
        return EMPTY_QUERY
    if len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES:
        return f"SQL is larger than {MAX_SQL_BYTES} bytes"
    lowered = sql.lower()
    for marker, reason in _HIDDEN_CODE_MARKERS:
        if marker in lowered:
            return reason
    return None


def classify_batch(statements: Sequence[ClassifiedStatement]) -> Classification:
    """Combine per-statement classes into the batch verdict (§5.2 batch result, §5.3)."""
    if not statements:
        return Classification.rejected(EMPTY_QUERY)
    if len(statements) > MAX_STATEMENTS:
        return Classification.rejected(
            f"too many statements ({len(statements)}; at most {MAX_STATEMENTS})"
        )
    kind = max((s.kind for s in statements), key=lambda k: k.rank)
    rejected_reason: str | None = None
    if kind is StatementClass.REJECTED:
        index, first = next(
            (i, s) for i, s in enumerate(statements, 1) if s.kind is StatementClass.REJECTED
        )
        rejected_reason = (
            first.reason if len(statements) == 1 else f"statement {index}: {first.reason}"
        )
    elif kind is StatementClass.SELECT:
        rejected_reason = _select_batch_violation(statements)
        if rejected_reason is not None:
            kind = StatementClass.REJECTED
    return Classification(
        operation=Operation.EXECUTE_SELECT
        if kind is StatementClass.SELECT
        else Operation.EXECUTE_DML,
        kind=kind,
        statements=tuple(statements),
        is_ddl_only=kind.is_ddl,
        contains_ddl=any(s.kind.is_ddl for s in statements),
        rejected_reason=rejected_reason,
        parse_failed=any(s.kind is StatementClass.PARSE_FAILURE for s in statements),
    )


def _select_batch_violation(statements: Sequence[ClassifiedStatement]) -> str | None:
    """§5.3: a read-only batch is safe SETs followed by exactly one result-producing one."""
    if len(statements) == 1:
        return None
    queries = sum(1 for s in statements if not s.is_safe_set)
    if queries > 1:
        return "a read-only batch may run only one query: submit each query separately"
    if queries == 0:
        return "a read-only batch of SET statements needs a query after them"
    if statements[-1].is_safe_set:
        return "statements after the query are not allowed in a read-only batch"
    return None


def execution_plan_json(classification: Classification) -> str:
    """The compact JSON array of the exact statement texts: what the server stores and signs.

    The agent runs `";\\n".join(statements)`. Refused for a text that could not be parsed
    or holds no statement: there is nothing verified to sign.
    """
    if classification.parse_failed:
        raise ValueError("no execution plan for SQL that could not be parsed")
    if not classification.statements:
        raise ValueError("no execution plan for a batch without statements")
    return json.dumps(
        [s.text for s in classification.statements], separators=(",", ":"), ensure_ascii=False
    )
