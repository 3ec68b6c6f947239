"""What one parsed statement touches and which review rules it trips (docs/sql-safety.md §3).

`statement_facts` reads a sqlglot tree the classifier already parsed and returns the
`StatementFacts` review and risk work from: the tables named (CTE names and table
functions excluded, names folded as the database folds them), the tables rows are deleted
from, one `ReviewHit` per rule tripped, and whether the statement writes rows or is safe
DDL on its own. Messages name tables and columns, never literal values: findings reach the
audit log.

Nothing here decides a statement's class; a statement whose facts cannot be read (a
`Command` fallback) keeps its fail-closed class and gets what its leading keywords say.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from sqlglot import exp

from domain.server.review_rules import LARGE_IN_LIST_ITEMS, ReviewHit, ReviewRule
from domain.server.sql_classification import StatementFacts, TableRef

__all__ = ["Walked", "hits_of_unparsed_ddl", "statement_facts"]

_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
#: Column types that bring their own default (a sequence), so NOT NULL needs none.
_SELF_FILLING_TYPES = frozenset(
    {exp.DataType.Type.SERIAL, exp.DataType.Type.BIGSERIAL, exp.DataType.Type.SMALLSERIAL}
)
_SELF_FILLING_CONSTRAINTS = (
    exp.DefaultColumnConstraint,
    exp.GeneratedAsIdentityColumnConstraint,
    exp.ComputedColumnConstraint,
    exp.AutoIncrementColumnConstraint,
)
_NOT_NULL_CONSTRAINTS = (exp.NotNullColumnConstraint, exp.PrimaryKeyColumnConstraint)
_DROP_RULES = {
    "TABLE": ReviewRule.DROP_TABLE,
    "VIEW": ReviewRule.DROP_VIEW,
    "INDEX": ReviewRule.DROP_INDEX,
    "SEQUENCE": ReviewRule.DROP_SEQUENCE,
}
_COMPARISONS: dict[type[exp.Expr], Callable[[Any, Any], bool]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
}


class Walked:
    """A parsed statement and its nodes grouped by type, from one walk of the tree.

    Classification and facts ask a dozen "does it contain …" questions of every tree; one
    walk instead of one per question keeps a 100-item IN list from being walked 16 times.
    """

    def __init__(self, tree: exp.Expr) -> None:
        self.tree = tree
        self._by_type: dict[type[exp.Expr], list[exp.Expr]] = {}
        for node in tree.walk():
            self._by_type.setdefault(type(node), []).append(node)

    def all(self, *types: type[exp.Expr]) -> list[Any]:
        """Every node of these types (subclasses included), each type in walk order."""
        return [n for kind, ns in self._by_type.items() if issubclass(kind, types) for n in ns]

    def has(self, *types: type[exp.Expr]) -> bool:
        return any(issubclass(kind, types) for kind in self._by_type)


class _Names:
    """Turns a sqlglot table into a `TableRef` as the database resolves the name."""

    def __init__(self, walked: Walked, dialect: str) -> None:
        self.fold_case = dialect == "postgres"
        self.dialect = dialect
        self.ctes = {self.ident(cte.args["alias"].this) for cte in walked.all(exp.CTE)}
        self.aliases: dict[str, TableRef] = {}
        for table in walked.all(exp.Table):
            ref = self.real(table)
            alias = table.args.get("alias")
            if ref is not None and isinstance(alias, exp.TableAlias) and alias.this:
                self.aliases[self.ident(alias.this)] = ref

    def ident(self, node: exp.Expr) -> str:
        if isinstance(node, exp.Identifier) and not node.quoted and self.fold_case:
            return node.name.lower()
        return node.name

    def real(self, table: exp.Table) -> TableRef | None:
        """The table a FROM/JOIN/target item names, or None (a CTE, a table function)."""
        if not isinstance(table.this, exp.Identifier):
            return None
        db = table.args.get("db")
        name = self.ident(table.this)
        if db is None and (name in self.ctes or (self.dialect == "mysql" and name == "dual")):
            return None
        return TableRef(name, self.ident(db) if isinstance(db, exp.Identifier) else None)

    def target(self, table: exp.Table) -> TableRef | None:
        """A DELETE target, which MySQL lets name an alias of a FROM item."""
        ref = self.real(table)
        if ref is not None and ref.schema is None and ref.name in self.aliases:
            return self.aliases[ref.name]
        return ref


def statement_facts(
    walked: Walked, dialect: str, *, runs: bool = True, replace_into: bool = False
) -> StatementFacts:
    """The facts of one parsed statement.

    `runs` is False for a plain EXPLAIN: the plan names tables, but nothing is written,
    deleted or changed, so it trips no rule. `replace_into` marks a MySQL REPLACE parsed as
    the INSERT it extends: REPLACE deletes the rows it collides with (and their ON DELETE
    CASCADE children) before inserting.
    """
    tree = walked.tree
    names = _Names(walked, dialect)
    tables = _tables(walked, names)
    if not runs:
        return StatementFacts(tables=tables)
    hits: list[ReviewHit] = []
    deleted: list[TableRef] = []
    for delete in walked.all(exp.Delete):
        targets = _delete_targets(delete, names)
        deleted.extend(targets)
        if _matches_every_row(delete.args.get("where")):
            hits.append(_no_where(ReviewRule.NO_WHERE_DELETE, "DELETE FROM", targets))
    for update in walked.all(exp.Update):
        if isinstance(update.parent, exp.When):
            continue  # MERGE … WHEN MATCHED THEN UPDATE: the ON condition picks the rows
        if _matches_every_row(update.args.get("where")):
            target = update.this
            refs = [r for r in [names.real(target)] if r] if isinstance(target, exp.Table) else []
            hits.append(_no_where(ReviewRule.NO_WHERE_UPDATE, "UPDATE", refs))
    for merge in walked.all(exp.Merge):
        if _merge_deletes(merge) and isinstance(merge.this, exp.Table):
            deleted.extend(r for r in [names.real(merge.this)] if r)
    if replace_into and isinstance(tree, exp.Insert):
        deleted.extend(_targets_of([tree.this], names))
    safe_ddl = False
    if isinstance(tree, exp.TruncateTable):
        targets = _targets_of(tree.expressions, names)
        deleted.extend(targets)
        hits.append(ReviewHit(ReviewRule.TRUNCATE, f"TRUNCATE {_listed(targets)}"))
    elif isinstance(tree, exp.Drop):
        hits.extend(_drop_hits(tree, names))
    elif isinstance(tree, exp.Create):
        safe_ddl = _create_facts(tree, names, dialect, hits)
    elif isinstance(tree, exp.Alter):
        safe_ddl = _alter_facts(tree, names, dialect, hits)
    large = _largest_in_list(walked)
    if large is not None:
        hits.append(large)
    writes = walked.has(*_WRITES)
    if isinstance(tree, exp.Copy):
        writes = bool(tree.args.get("kind"))  # COPY … FROM loads rows into the table
    return StatementFacts(
        tables=tables,
        delete_targets=tuple(dict.fromkeys(deleted)),
        hits=tuple(dict.fromkeys(hits)),
        writes_rows=writes,
        safe_ddl=safe_ddl and not hits,
    )


def hits_of_unparsed_ddl(verb: str, kind: str) -> tuple[ReviewHit, ...]:
    """The rule a CREATE/DROP/TRUNCATE sqlglot could not parse trips by its words alone.

    Its object names cannot be read, so the message says so; the rule still fires, so a
    policy that blocks dropping tables blocks this one too.
    """
    if verb == "DROP" and kind in _DROP_RULES:
        return (ReviewHit(_DROP_RULES[kind], f"DROP {kind} (object names could not be read)"),)
    if verb == "CREATE" and kind == "SEQUENCE":
        return (ReviewHit(ReviewRule.CREATE_SEQUENCE, "CREATE SEQUENCE (name could not be read)"),)
    if verb == "TRUNCATE":
        return (ReviewHit(ReviewRule.TRUNCATE, "TRUNCATE (table names could not be read)"),)
    return ()


# --- tables ---------------------------------------------------------------------------


def _tables(walked: Walked, names: _Names) -> tuple[TableRef, ...]:
    """Every real table or view, in source order: index and sequence names are not tables."""
    tree = walked.tree
    skip: set[int] = set()
    if isinstance(tree, exp.Drop | exp.Create) and str(tree.args.get("kind")).upper() in (
        "INDEX",
        "SEQUENCE",
    ):
        objects = tree.args.get("tables") or [tree.this]
        skip = {id(t) for t in objects if isinstance(t, exp.Table)}
    if isinstance(tree, exp.Delete):
        skip |= {id(t) for t in tree.args.get("tables") or []}  # aliases, resolved below
    found: list[tuple[int, TableRef]] = []
    for table in walked.all(exp.Table):
        ref = names.real(table) if id(table) not in skip else None
        if ref is not None:
            found.append((table.this.meta.get("start", 0), ref))
    if isinstance(tree, exp.Delete):
        for table in tree.args.get("tables") or []:
            ref = names.target(table)
            if ref is not None:
                found.append((table.this.meta.get("start", 0), ref))
    return tuple(dict.fromkeys(ref for _, ref in sorted(found, key=lambda pair: pair[0])))


def _targets_of(items: Iterable[exp.Expr], names: _Names) -> list[TableRef]:
    refs = []
    for item in items:
        table = item.this if isinstance(item, exp.Schema) else item
        ref = names.real(table) if isinstance(table, exp.Table) else None
        if ref is not None:
            refs.append(ref)
    return refs


def _delete_targets(delete: exp.Delete, names: _Names) -> list[TableRef]:
    """`DELETE FROM t`, or MySQL's `DELETE a, b FROM …` whose targets may be aliases."""
    listed = delete.args.get("tables")
    if listed:
        return [r for r in (names.target(t) for t in listed) if r is not None]
    return _targets_of([delete.this], names)


def _merge_deletes(merge: exp.Merge) -> bool:
    return any(
        isinstance(when.args.get("then"), exp.Var) and when.args["then"].name.upper() == "DELETE"
        for when in merge.find_all(exp.When)
    )


def _listed(refs: Iterable[TableRef]) -> str:
    return ", ".join(str(r) for r in refs) or "(unnamed table)"


# --- WHERE ----------------------------------------------------------------------------


def _matches_every_row(where: exp.Expr | None) -> bool:
    """No WHERE, or one that does not depend on the row and is not known to be false.

    `WHERE 1=1`, `WHERE true`, `WHERE id = 5 OR 1=1` or `WHERE now() > '2000-01-01'`
    touch every row (or none); `WHERE 1=0` touches none and is not reported.
    """
    if where is None:
        return True
    condition = where.this if isinstance(where, exp.Where) else where
    truth = _truth(condition)
    if truth is not None:
        return truth
    return condition.find(exp.Column, exp.Subquery, exp.Exists, exp.Placeholder) is None


def _truth(node: exp.Expr) -> bool | None:
    """A condition's value when it is the same for every row, else None."""
    if isinstance(node, exp.Paren):
        return _truth(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this) != 0
        except ValueError:
            return None
    if isinstance(node, exp.Not):
        inner = _truth(node.this)
        return None if inner is None else not inner
    if isinstance(node, exp.And | exp.Or):
        sides = (_truth(node.this), _truth(node.expression))
        decisive = isinstance(node, exp.Or)  # True decides an OR, False an AND
        if decisive in sides:
            return decisive
        return (not decisive) if sides == (not decisive, not decisive) else None
    compare = _COMPARISONS.get(type(node))
    if compare is not None:
        left, right = node.this, node.expression
        if isinstance(left, exp.Literal) and isinstance(right, exp.Literal):
            return _compare_literals(compare, left, right)
        if isinstance(node, exp.EQ) and isinstance(left, exp.Column) and left == right:
            return True  # `id = id`: every row where it is set
    return None


def _compare_literals(
    compare: Callable[[Any, Any], bool], left: exp.Literal, right: exp.Literal
) -> bool | None:
    if left.is_string and right.is_string:
        return compare(left.this, right.this)
    if left.is_string or right.is_string:
        return None  # the database's casting rules decide
    try:
        return compare(float(left.this), float(right.this))
    except ValueError:
        return None


def _no_where(rule: ReviewRule, verb: str, targets: Iterable[TableRef]) -> ReviewHit:
    return ReviewHit(rule, f"{verb} {_listed(targets)} without a WHERE clause that limits rows")


# --- DDL ------------------------------------------------------------------------------


def _drop_hits(tree: exp.Drop, names: _Names) -> list[ReviewHit]:
    kind = str(tree.args.get("kind") or "").upper()
    rule = _DROP_RULES.get(kind)
    if rule is None:
        return []
    objects = [t.sql() for t in tree.args.get("tables") or []]
    shown = "MATERIALIZED VIEW" if tree.args.get("materialized") else kind
    return [ReviewHit(rule, f"DROP {shown} {', '.join(objects) or '(unnamed)'}")]


def _create_facts(tree: exp.Create, names: _Names, dialect: str, hits: list[ReviewHit]) -> bool:
    """CREATE's hits; True when it would be safe DDL on its own."""
    kind = str(tree.args.get("kind") or "").upper()
    replace = bool(tree.args.get("replace"))
    if kind == "SEQUENCE":
        hits.append(ReviewHit(ReviewRule.CREATE_SEQUENCE, f"CREATE SEQUENCE {tree.this.sql()}"))
        return False
    if kind == "TABLE":
        return not replace and not isinstance(tree.args.get("expression"), exp.Query)
    if kind == "VIEW":
        materialized = tree.find(exp.MaterializedProperty) is not None
        return not replace and not materialized
    if kind == "INDEX":
        concurrently = bool(tree.args.get("concurrently"))
        if dialect == "postgres" and not concurrently:
            index = tree.this
            table = index.args.get("table") if isinstance(index, exp.Index) else None
            on = _listed(_targets_of([table], names)) if table is not None else "its table"
            hits.append(
                ReviewHit(
                    ReviewRule.CREATE_INDEX_NOT_CONCURRENTLY,
                    f"CREATE INDEX on {on} without CONCURRENTLY blocks writes while it builds",
                )
            )
        return dialect == "postgres" and concurrently
    return False


def _alter_facts(tree: exp.Alter, names: _Names, dialect: str, hits: list[ReviewHit]) -> bool:
    """ALTER TABLE's hits; True when every action adds a column (PostgreSQL)."""
    if str(tree.args.get("kind") or "").upper() != "TABLE":
        return False
    table = _listed(_targets_of([tree.this], names))
    actions = tree.args.get("actions") or []
    for action in actions:
        if isinstance(action, exp.ColumnDef):
            if _not_null_without_default(action):
                hits.append(
                    ReviewHit(
                        ReviewRule.NOT_NULL_WITHOUT_DEFAULT,
                        f"ALTER TABLE {table} adds NOT NULL column {action.name} without a DEFAULT",
                    )
                )
        elif isinstance(action, exp.Drop) and str(action.args.get("kind")).upper() == "COLUMN":
            columns = ", ".join(c.sql() for c in action.args.get("tables") or [])
            hits.append(
                ReviewHit(ReviewRule.DROP_COLUMN, f"ALTER TABLE {table} drops column {columns}")
            )
        elif isinstance(action, exp.AlterColumn):
            if action.args.get("dtype") is not None:
                hits.append(
                    ReviewHit(
                        ReviewRule.ALTER_COLUMN_TYPE,
                        f"ALTER TABLE {table} changes the type of column {action.name}",
                    )
                )
            if action.args.get("allow_null") is False:
                hits.append(
                    ReviewHit(
                        ReviewRule.NOT_NULL_WITHOUT_DEFAULT,
                        f"ALTER TABLE {table} sets column {action.name} NOT NULL",
                    )
                )
        elif isinstance(action, exp.ModifyColumn):
            column = action.args.get("rename_from") or action.this
            hits.append(
                ReviewHit(
                    ReviewRule.ALTER_COLUMN_TYPE,
                    f"ALTER TABLE {table} redefines the type of column {column.name}",
                )
            )
    return (
        dialect == "postgres"
        and bool(actions)
        and all(isinstance(a, exp.ColumnDef) for a in actions)
    )


def _not_null_without_default(column: exp.ColumnDef) -> bool:
    kinds = [c.args.get("kind") for c in column.args.get("constraints") or []]
    if not any(isinstance(k, _NOT_NULL_CONSTRAINTS) for k in kinds):
        return False
    if any(isinstance(k, _SELF_FILLING_CONSTRAINTS) for k in kinds):
        return False
    datatype = column.args.get("kind")
    return not (isinstance(datatype, exp.DataType) and datatype.this in _SELF_FILLING_TYPES)


def _largest_in_list(walked: Walked) -> ReviewHit | None:
    largest: exp.In | None = None
    for node in walked.all(exp.In):
        size = len(node.expressions)
        if size > LARGE_IN_LIST_ITEMS and (largest is None or size > len(largest.expressions)):
            largest = node
    if largest is None:
        return None
    subject = largest.this
    on = f" on {subject.sql()}" if isinstance(subject, exp.Column) else ""
    return ReviewHit(
        ReviewRule.LARGE_IN_LIST,
        f"IN list{on} with {len(largest.expressions)} items (more than {LARGE_IN_LIST_ITEMS})",
    )
