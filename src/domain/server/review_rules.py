"""The SQL review rules: their names, what each may do, and what each does by default.

docs/sql-safety.md §3. A parser adapter reports which rules a statement trips (a
`ReviewHit` per rule, see `domain.server.sql_classification`); a `[[sql_review]]` policy
(`domain.server.sql_review`) decides whether that blocks the request, warns the approvers
or is ignored. The names are the `[[sql_review]]` keys and the finding codes, so they are
part of the configuration format and never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "BYPASSABLE_BY_ALLOW_DDL",
    "DEFAULT_RULE_ACTIONS",
    "DROP_RULES",
    "LARGE_IN_LIST_ITEMS",
    "ReviewHit",
    "ReviewRule",
    "RuleAction",
]


class ReviewRule(StrEnum):
    """One check of `[[sql_review]]`, in the order the documentation lists them."""

    NO_WHERE_DELETE = "no_where_delete"
    NO_WHERE_UPDATE = "no_where_update"
    DROP_TABLE = "drop_table"
    TRUNCATE = "truncate"
    DROP_COLUMN = "drop_column"
    NOT_NULL_WITHOUT_DEFAULT = "not_null_without_default"
    CREATE_INDEX_NOT_CONCURRENTLY = "create_index_not_concurrently"
    ALTER_COLUMN_TYPE = "alter_column_type"
    MIXED_DDL_DML = "mixed_ddl_dml"
    LARGE_IN_LIST = "large_in_list"
    DROP_INDEX = "drop_index"
    DROP_VIEW = "drop_view"
    DROP_SEQUENCE = "drop_sequence"
    CREATE_SEQUENCE = "create_sequence"


class RuleAction(StrEnum):
    """What a policy does with a rule's finding."""

    BLOCK = "block"  # the request is refused (400), naming every blocking finding
    WARN = "warn"  # the finding travels with the request to its approvers and raises risk
    OFF = "off"  # the rule is not checked


#: The built-in action of each rule; a `[[sql_review]]` entry overrides some of them.
DEFAULT_RULE_ACTIONS: Mapping[ReviewRule, RuleAction] = MappingProxyType(
    {
        ReviewRule.NO_WHERE_DELETE: RuleAction.BLOCK,
        ReviewRule.NO_WHERE_UPDATE: RuleAction.BLOCK,
        ReviewRule.DROP_TABLE: RuleAction.BLOCK,
        ReviewRule.TRUNCATE: RuleAction.BLOCK,
        ReviewRule.DROP_COLUMN: RuleAction.WARN,
        ReviewRule.NOT_NULL_WITHOUT_DEFAULT: RuleAction.WARN,
        ReviewRule.CREATE_INDEX_NOT_CONCURRENTLY: RuleAction.WARN,
        ReviewRule.ALTER_COLUMN_TYPE: RuleAction.WARN,
        ReviewRule.MIXED_DDL_DML: RuleAction.WARN,
        ReviewRule.LARGE_IN_LIST: RuleAction.WARN,
        ReviewRule.DROP_INDEX: RuleAction.WARN,
        ReviewRule.DROP_VIEW: RuleAction.WARN,
        ReviewRule.DROP_SEQUENCE: RuleAction.WARN,
        ReviewRule.CREATE_SEQUENCE: RuleAction.OFF,
    }
)

#: Schema-change rules an operator's break-glass request with `allow_ddl` may override.
#: The data-safety rules (no WHERE, mixed DDL and DML, huge IN lists) never are.
BYPASSABLE_BY_ALLOW_DDL: frozenset[ReviewRule] = frozenset(
    {
        ReviewRule.DROP_TABLE,
        ReviewRule.TRUNCATE,
        ReviewRule.DROP_COLUMN,
        ReviewRule.NOT_NULL_WITHOUT_DEFAULT,
        ReviewRule.CREATE_INDEX_NOT_CONCURRENTLY,
        ReviewRule.ALTER_COLUMN_TYPE,
        ReviewRule.DROP_INDEX,
        ReviewRule.DROP_VIEW,
        ReviewRule.DROP_SEQUENCE,
        ReviewRule.CREATE_SEQUENCE,
    }
)

#: Rules whose finding means something is dropped: risk at least high.
DROP_RULES: frozenset[ReviewRule] = frozenset(
    {
        ReviewRule.DROP_TABLE,
        ReviewRule.TRUNCATE,
        ReviewRule.DROP_INDEX,
        ReviewRule.DROP_VIEW,
        ReviewRule.DROP_SEQUENCE,
    }
)

#: Entries of an IN list above which `large_in_list` fires.
LARGE_IN_LIST_ITEMS = 100


@dataclass(frozen=True)
class ReviewHit:
    """A rule one statement trips, with what the approver should read about it.

    `message` names the object concerned (`DELETE FROM orders has no WHERE clause`) and
    never quotes literal values: findings reach the audit log.
    """

    rule: ReviewRule
    message: str
