"""`SqlClassifier` on sqlglot: classify submitted SQL and redact it for the audit log.

docs/server.md §5.1-§5.3 and §6.5; the sharp edges are docs/server.md §5.4.
Everything here fails closed: what sqlglot cannot parse is a parse failure (400 on create),
what it parses but we do not recognise (`exp.Command`, a bare expression) is UNKNOWN and
needs approval, and nothing is SELECT unless we know it is.

The text is cut into statements by the *tokenizer's* positions, never by a naive `;` split
(semicolons live in strings, dollar quotes and comments), and each statement keeps its
exact source slice: the agent runs those slices, so nothing the approver read is
re-serialised. The slicing tokenizer is the dialect's own with sqlglot's COMMAND shortcut
turned off (that shortcut folds everything after `SHOW`, `EXECUTE`, `VACUUM`… into one
token with wrong positions).

Where sqlglot's lexer and the database's could disagree on where a string or comment ends,
the text is refused rather than guessed at:
- MySQL executable comments `/*! … */` and `/*M! … */`, and sqlglot's Jinja `{# … #}`
  comment (see `domain.server.sql_classification.pre_parse_rejection`);
- a backslash before a quote: whether it escapes depends on the server's
  `NO_BACKSLASH_ESCAPES` (MySQL) or `standard_conforming_strings` (PostgreSQL), so the text
  is tokenized both ways and refused when the two token streams differ;
- MySQL `--` before a non-ASCII space (a comment to sqlglot, two minus signs to MySQL);
- a PostgreSQL dollar quote whose tag is not an identifier (`$1a$` is a parameter and a
  name to PostgreSQL, a string opener to sqlglot).
A statement's text also ends at its last token, so a trailing comment can never swallow
the `;` the agent joins statements with.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token, TokenType
from sqlglot.tokens import Tokenizer

from adapters.sql_review.statement_facts import Walked, hits_of_unparsed_ddl, statement_facts
from domain.server.review_rules import ReviewRule
from domain.server.sql_classification import (
    DANGEROUS_FUNCTIONS,
    MAX_STATEMENTS,
    REDACTION_FAILED,
    SAFE_SET_VARIABLES,
    Classification,
    ClassifiedStatement,
    StatementClass,
    StatementFacts,
    TableRef,
    classify_batch,
    pre_parse_rejection,
)

__all__ = ["SqlglotClassifier"]

#: Our wire dialect names → sqlglot's.
_SQLGLOT_DIALECTS = {"postgresql": "postgres", "mysql": "mysql"}

_WHITESPACE = " \t\n\r\f\v"

_LITERAL_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.NUMBER,
        TokenType.NATIONAL_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.RAW_STRING,
        TokenType.UNICODE_STRING,
    }
)
#: Tokens that are never a keyword, whatever their text (`"BEGIN"` is an identifier).
_NOT_KEYWORDS = _LITERAL_TOKENS | {TokenType.IDENTIFIER}

_TRANSACTION_CONTROL = frozenset(
    {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "XA"}
)
#: DML statements sqlglot does not parse (NOTIFY, REPLACE…) or parses as something else
#: (`LISTEN ch` comes back as an alias). Their class does not depend on their content.
_KEYWORD_DML = frozenset({"NOTIFY", "LISTEN", "UNLISTEN", "CALL", "REPLACE"})
_EXPLAIN = frozenset({"EXPLAIN", "DESCRIBE", "DESC"})
_ANALYZE = frozenset({"ANALYZE", "ANALYSE"})
#: What follows MySQL's `ANALYZE` when it is table maintenance, not MariaDB's ANALYZE statement.
_MYSQL_ANALYZE_TABLE = frozenset({"TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"})
#: A query AST only counts as a query when the statement starts like one.
_QUERY_KEYWORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "("})

_CREATE_KINDS = {
    "TABLE": StatementClass.DDL,
    "VIEW": StatementClass.DDL,
    "INDEX": StatementClass.DDL,
    "SEQUENCE": StatementClass.DESTRUCTIVE_DDL,
}
_ALTER_KINDS = {"TABLE": StatementClass.DDL}
_DROP_KINDS = {
    "TABLE": StatementClass.DESTRUCTIVE_DDL,
    "VIEW": StatementClass.DESTRUCTIVE_DDL,
    "INDEX": StatementClass.DESTRUCTIVE_DDL,
    "SEQUENCE": StatementClass.DESTRUCTIVE_DDL,
}
_DDL_KINDS = {"CREATE": _CREATE_KINDS, "ALTER": _ALTER_KINDS, "DROP": _DROP_KINDS}
#: Object kinds whose DDL not even break-glass may run (see `_refused_ddl`).
_NEVER_BREAK_GLASS_KINDS = frozenset(
    {"ROLE", "USER", "GROUP", "DATABASE", "TABLESPACE", "SERVER", "SUBSCRIPTION", "PUBLICATION"}
)
#: Words between CREATE/ALTER/DROP and the object kind, when sqlglot gave up on parsing.
_DDL_MODIFIERS = frozenset(
    {"OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "UNIQUE", "MATERIALIZED", "IF", "NOT"}
    | {"EXISTS", "GLOBAL", "LOCAL", "RECURSIVE", "CONCURRENTLY"}
)

_NAIVE_DO_OR_LOAD = re.compile(r"(?:^|;)\s*(?:DO|LOAD)\b", re.IGNORECASE)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
#: What a SET value sqlglot did not parse may hold: no calls, no further assignments.
_SET_VALUE_TOKENS = _LITERAL_TOKENS | {
    TokenType.VAR,
    TokenType.IDENTIFIER,
    TokenType.DASH,
    TokenType.PLUS,
    TokenType.DEFAULT,
    TokenType.TRUE,
    TokenType.FALSE,
    TokenType.ON,
    TokenType.COLLATE,
}
_DOLLAR_TAG = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*")
_DASHES = re.compile(r"-(?=-(.))", re.DOTALL)  # overlapping: `---x` holds two

_BACKSLASH_SETTING = {
    "postgres": "standard_conforming_strings",
    "mysql": "NO_BACKSLASH_ESCAPES",
}


@dataclass(frozen=True)
class _Verdict:
    kind: StatementClass
    reason: str
    is_safe_set: bool = False
    facts: StatementFacts = field(default_factory=StatementFacts)
    #: The table a CREATE TABLE makes: a later CREATE INDEX on it blocks nobody.
    creates: TableRef | None = None


def _rejected(reason: str) -> _Verdict:
    return _Verdict(StatementClass.REJECTED, reason)


@dataclass(frozen=True)
class _Segment:
    """One statement: its exact source text and its tokens (positions in the whole input)."""

    text: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class _Tools:
    """One dialect's sqlglot pieces. Tokenizers are built per call: they are not thread-safe."""

    name: str
    dialect: Dialect
    slicer: type[Tokenizer]
    flipped: type[Tokenizer]

    def slice_tokens(self, sql: str) -> list[Token]:
        return self.slicer(dialect=self.dialect).tokenize(sql)

    def flipped_tokens(self, sql: str) -> list[Token]:
        return self.flipped(dialect=self.dialect).tokenize(sql)

    def parse(self, sql: str) -> exp.Expr:
        """Parse one statement; anything but exactly one expression is an error."""
        tokens = self.dialect.tokenizer_class(dialect=self.dialect).tokenize(sql)
        return self._one(self.dialect.parser().parse(tokens, sql))

    def parse_slice(self, sql: str, tokens: Sequence[Token]) -> exp.Expr:
        """Parse one statement of `sql` from the slicer's own tokens (no second tokenizing).

        They are the dialect tokenizer's tokens except after a COMMAND keyword (SHOW,
        EXECUTE…), which the dialect's tokenizer folds into one token the parser expects:
        such a statement is tokenized again the dialect's way.
        """
        if tokens[0].token_type in self.dialect.tokenizer_class.COMMANDS:
            return self.parse(_source(sql, tokens))
        return self._one(self.dialect.parser().parse(list(tokens), sql))

    @staticmethod
    def _one(expressions: list[exp.Expr | None]) -> exp.Expr:
        if len(expressions) != 1 or expressions[0] is None:
            raise ValueError("expected exactly one statement")
        return expressions[0]


def _variant(base: type[Tokenizer], name: str, *, flip_backslash: bool) -> type[Tokenizer]:
    escapes = list(base.STRING_ESCAPES)
    if flip_backslash:
        escapes = [e for e in escapes if e != "\\"] if "\\" in escapes else [*escapes, "\\"]
    attrs = {
        "COMMANDS": set(),
        "STRING_ESCAPES": escapes,
        "BYTE_STRING_ESCAPES": list(base.BYTE_STRING_ESCAPES),
    }
    return cast("type[Tokenizer]", type(f"{base.__name__}{name}", (base,), attrs))


@functools.cache
def _tools(dialect: str) -> _Tools:
    name = _SQLGLOT_DIALECTS.get(dialect)
    if name is None:
        raise ValueError(f"unsupported SQL dialect: {dialect!r} (expected postgresql or mysql)")
    instance = Dialect.get_or_raise(name)
    base = instance.tokenizer_class
    return _Tools(
        name=name,
        dialect=instance,
        slicer=_variant(base, "Slicer", flip_backslash=False),
        flipped=_variant(base, "Flipped", flip_backslash=True),
    )


#: Texts up to this long are judged once per (text, dialect) and remembered: services
#: send the same statements over and over, and both verdicts are pure functions of the
#: text (immutable values, safe to share). Longer texts are never kept.
_REMEMBERED_TEXT_CHARS = 4096
#: How many verdicts of each kind are remembered (least recently used go first).
_REMEMBERED_VERDICTS = 1024


class SqlglotClassifier:
    """Classifies with sqlglot's AST, slices with its tokenizer; thread-safe.

    `remember=False` judges every text afresh: what a text costs the first time it is
    seen (`bench/classify.py`), since a remembered verdict costs next to nothing.
    """

    def __init__(self, *, remember: bool = True) -> None:
        self._classification: Callable[[str, str], Classification] = _classify
        self._redaction: Callable[[str, str], str] = _redact
        if remember:
            remembered = functools.lru_cache(maxsize=_REMEMBERED_VERDICTS)
            self._classification = remembered(_classify)
            self._redaction = remembered(_redact)

    def classify(self, sql: str, dialect: str) -> Classification:
        if len(sql) <= _REMEMBERED_TEXT_CHARS:
            return self._classification(sql, dialect)
        return _classify(sql, dialect)

    def redact(self, sql: str, dialect: str) -> str:
        """Every literal becomes `?` (not NULL, not placeholders); comments are dropped."""
        if len(sql) <= _REMEMBERED_TEXT_CHARS:
            return self._redaction(sql, dialect)
        return _redact(sql, dialect)


def _classify(sql: str, dialect: str) -> Classification:
    tools = _tools(dialect)
    rejection = pre_parse_rejection(sql)
    if rejection is not None:
        return Classification.rejected(rejection)
    try:
        tokens = tools.slice_tokens(sql)
    except Exception:  # sqlglot's TokenError, or worse: fail closed either way
        if _NAIVE_DO_OR_LOAD.search(sql):
            return Classification.rejected("DO and LOAD statements are not allowed")
        return classify_batch(
            [
                ClassifiedStatement(
                    sql.strip(),
                    StatementClass.PARSE_FAILURE,
                    "could not be tokenized (an unterminated string, quote or comment?)",
                )
            ]
        )
    if tools.name == "mysql" and _dashes_before_unicode_space(sql):
        return Classification.rejected(
            "'--' followed by a non-ASCII space is ambiguous in MySQL (a comment only "
            "before an ASCII space or control character): use '-- ' or /* */"
        )
    if tools.name == "postgres" and _foreign_dollar_tag(sql, tokens):
        return Classification.rejected(
            "a dollar-quote tag must be a PostgreSQL identifier ($tag$, not starting "
            "with a digit): other tags do not open a string in PostgreSQL"
        )
    if "\\" in sql and not _same_tokens_both_ways(tools, sql, tokens):
        return Classification.rejected(
            "a backslash next to a quote makes this SQL ambiguous (it depends on the "
            f"server's {_BACKSLASH_SETTING[tools.name]}): escape quotes by doubling them"
        )
    segments = _split(sql, tokens)
    if len(segments) > MAX_STATEMENTS:
        return Classification.rejected(
            f"too many statements ({len(segments)}; at most {MAX_STATEMENTS})"
        )
    statements = []
    created: set[TableRef] = set()
    for segment in segments:
        verdict = _classify_tokens(tools, sql, segment.tokens)
        facts = _index_on_new_table(verdict.facts, created)
        if verdict.creates is not None:
            created.add(verdict.creates)
        statements.append(
            ClassifiedStatement(
                segment.text,
                verdict.kind,
                verdict.reason,
                is_safe_set=verdict.is_safe_set,
                facts=facts,
            )
        )
    return classify_batch(statements)


def _redact(sql: str, dialect: str) -> str:
    tools = _tools(dialect)
    if not sql.strip():
        return ""
    if pre_parse_rejection(sql) is not None:
        return REDACTION_FAILED
    try:
        segments = _split(sql, tools.slice_tokens(sql))
        return "; ".join(_redact_statement(tools, sql, s.tokens) for s in segments)
    except Exception:  # parse errors, unsupported generation, recursion: never leak
        return REDACTION_FAILED


def _index_on_new_table(facts: StatementFacts, created: set[TableRef]) -> StatementFacts:
    """`create_index_not_concurrently` is about tables in use, not one this batch created."""
    rule = ReviewRule.CREATE_INDEX_NOT_CONCURRENTLY
    if not any(h.rule is rule for h in facts.hits) or not set(facts.tables) <= created:
        return facts
    return replace(facts, hits=tuple(h for h in facts.hits if h.rule is not rule))


# --- slicing --------------------------------------------------------------------------


def _split(sql: str, tokens: Sequence[Token]) -> list[_Segment]:
    """Cut at top-level semicolons; keep each statement's exact source.

    A statement's text starts at its first non-blank character after the previous
    semicolon (so leading comments stay) and ends with its last token (so a trailing
    comment, which could swallow the `;` the agent joins with, goes). Empty statements
    (`;;`, a trailing comment) are dropped.
    """
    segments: list[_Segment] = []
    begin = 0
    current: list[Token] = []
    for token in [*tokens, None]:
        if token is not None and token.token_type is not TokenType.SEMICOLON:
            current.append(token)
            continue
        if current:
            start = begin
            while start < current[0].start and sql[start] in _WHITESPACE:
                start += 1
            segments.append(_Segment(sql[start : current[-1].end + 1], tuple(current)))
        current = []
        if token is not None:
            begin = token.end + 1
    return segments


def _same_tokens_both_ways(tools: _Tools, sql: str, tokens: Sequence[Token]) -> bool:
    try:
        flipped = tools.flipped_tokens(sql)
    except Exception:
        return False
    return [(t.token_type, t.start, t.end) for t in tokens] == [
        (t.token_type, t.start, t.end) for t in flipped
    ]


def _dashes_before_unicode_space(sql: str) -> bool:
    """sqlglot ends `--` comments on any `str.isspace()`; MySQL needs an ASCII one."""
    return any(not m.group(1).isascii() and m.group(1).isspace() for m in _DASHES.finditer(sql))


def _foreign_dollar_tag(sql: str, tokens: Sequence[Token]) -> bool:
    """sqlglot takes any `$…$` as a dollar quote; PostgreSQL only an identifier-like tag.

    `$1a$` is a parameter and a name to PostgreSQL: `SELECT $1a$; DROP TABLE t; …$1a$`
    would hide a statement inside what sqlglot reads as one string.
    """
    for token in tokens:
        if token.token_type is TokenType.HEREDOC_STRING:
            raw = sql[token.start : token.end + 1]
            tag = raw[1 : raw.index("$", 1)]
            if tag and not _DOLLAR_TAG.fullmatch(tag):
                return True
    return False


def _source(sql: str, tokens: Sequence[Token]) -> str:
    return sql[tokens[0].start : tokens[-1].end + 1]


def _word(token: Token) -> str:
    """A token's text as a keyword: upper-cased, blank for literals and identifiers."""
    return "" if token.token_type in _NOT_KEYWORDS else token.text.upper()


def _words(tokens: Sequence[Token]) -> list[str]:
    """Keyword words, one per word: sqlglot has multi-word tokens such as `LOCK TABLES`."""
    return [word for token in tokens for word in (_word(token).split() or [""])]


# --- classification -------------------------------------------------------------------


def _classify_tokens(tools: _Tools, sql: str, tokens: Sequence[Token]) -> _Verdict:
    keyword, second, *_ = [*_words(tokens[:2]), "", ""]
    if keyword == "DO":
        return _rejected("DO blocks are not allowed: their body cannot be inspected")
    if keyword == "LOAD":
        return _rejected(f"LOAD {second} is not allowed".replace("  ", " ").strip())
    if keyword in _TRANSACTION_CONTROL or (keyword == "PREPARE" and second == "TRANSACTION"):
        shown = "PREPARE TRANSACTION" if keyword == "PREPARE" else keyword
        return _rejected(f"transaction control is not allowed ({shown})")
    if keyword in ("LOCK", "UNLOCK"):
        return _rejected("explicit table locks (LOCK/UNLOCK) are not allowed")
    if keyword in ("GRANT", "REVOKE"):
        return _rejected(f"privilege changes are not allowed ({keyword})")
    if keyword == "SHOW":
        return _Verdict(StatementClass.SELECT, "SHOW")
    if keyword in _EXPLAIN:
        return _classify_explain(tools, sql, tokens)
    if keyword in _ANALYZE and tools.name == "mysql" and second not in _MYSQL_ANALYZE_TABLE:
        return _classify_explain(tools, sql, tokens)  # MariaDB's ANALYZE runs its statement
    outfile = _into_file(tokens)
    if outfile is not None:
        return _rejected(f"SELECT … INTO {outfile} writes a file on the database server")
    if keyword in _KEYWORD_DML:
        return _Verdict(StatementClass.DML, keyword, facts=_keyword_dml_facts(tools, sql, tokens))
    try:
        tree = tools.parse_slice(sql, tokens)
    except Exception as exc:
        return _Verdict(StatementClass.PARSE_FAILURE, _parse_error_reason(exc))
    if keyword == "SET":
        return _classify_set(tree, tokens, list_values=tools.name == "postgres")
    verdict = _classify_tree(tree, keyword, tokens)
    if verdict.kind is StatementClass.REJECTED or isinstance(tree, exp.Command):
        return verdict
    walked = Walked(tree)
    facts = statement_facts(walked, tools.name)
    creates = None
    if isinstance(tree, exp.Create) and str(tree.args.get("kind")).upper() == "TABLE":
        creates = facts.tables[0] if facts.tables else None
    return replace(_escalate(verdict, walked), facts=facts, creates=creates)


def _keyword_dml_facts(tools: _Tools, sql: str, tokens: Sequence[Token]) -> StatementFacts:
    """Facts of DML classified by its keyword: MySQL REPLACE is read as the INSERT it extends.

    Anything else (NOTIFY, CALL…) names no table we could read: it writes rows only as far
    as we know for REPLACE.
    """
    if _word(tokens[0]) != "REPLACE":
        return StatementFacts()
    source = _source(sql, tokens)
    try:
        tree = tools.parse("INSERT" + source[len(tokens[0].text) :])
    except Exception:
        return StatementFacts(writes_rows=True)
    if not isinstance(tree, exp.Insert):
        return StatementFacts(writes_rows=True)
    return statement_facts(Walked(tree), tools.name, replace_into=True)


def _parse_error_reason(exc: Exception) -> str:
    """Where parsing stopped, without quoting the SQL (reasons reach logs and audit)."""
    errors = exc.errors if isinstance(exc, ParseError) else []
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        return (
            f"could not be parsed: {first.get('description')} "
            f"(line {first.get('line')}, column {first.get('col')})"
        )
    return f"could not be parsed ({type(exc).__name__})"


def _classify_tree(tree: exp.Expr, keyword: str, tokens: Sequence[Token]) -> _Verdict:
    if isinstance(tree, exp.Query | exp.Values):
        if keyword in _QUERY_KEYWORDS:
            return _Verdict(StatementClass.SELECT, "query")
        return _Verdict(StatementClass.UNKNOWN, f"unrecognised statement ({keyword or '?'} …)")
    if isinstance(tree, exp.Insert | exp.Update | exp.Delete | exp.Merge | exp.Copy):
        return _Verdict(StatementClass.DML, tree.key.upper())
    if isinstance(tree, exp.Create | exp.Alter | exp.Drop):
        verb = tree.key.upper()
        kind = str(tree.args.get("kind") or "").upper()
        cls = _DDL_KINDS[verb].get(kind)
        if cls is None:
            return _refused_ddl(verb, kind)
        return _Verdict(cls, f"{verb} {kind}")
    if isinstance(tree, exp.TruncateTable):
        return _Verdict(StatementClass.DESTRUCTIVE_DDL, "TRUNCATE")
    if isinstance(tree, exp.Transaction | exp.Commit | exp.Rollback):
        return _rejected("transaction control is not allowed")
    if isinstance(tree, exp.Grant | exp.Revoke):
        return _rejected("privilege changes are not allowed")
    if isinstance(tree, exp.Command):
        verb = str(tree.this).upper()
        if verb in _DDL_KINDS:
            return _classify_unparsed_ddl(verb, tokens)
        if verb == "TRUNCATE":
            return _Verdict(
                StatementClass.UNKNOWN,
                "TRUNCATE could not be fully parsed; it needs approval",
                facts=StatementFacts(hits=hits_of_unparsed_ddl(verb, "")),
            )
        return _Verdict(StatementClass.UNKNOWN, f"{verb} is not recognised; it needs approval")
    return _Verdict(
        StatementClass.UNKNOWN, f"unrecognised statement ({keyword or type(tree).__name__})"
    )


def _classify_unparsed_ddl(verb: str, tokens: Sequence[Token]) -> _Verdict:
    """CREATE/ALTER/DROP that sqlglot gave up on: judge by the object kind alone."""
    kind = next((w for w in _words(tokens[1:]) if w not in _DDL_MODIFIERS), "")
    if kind in _DDL_KINDS[verb]:
        return _Verdict(
            StatementClass.UNKNOWN,
            f"{verb} {kind} could not be fully parsed; it needs approval",
            facts=StatementFacts(hits=hits_of_unparsed_ddl(verb, kind)),
        )
    return _refused_ddl(verb, kind)


def _refused_ddl(verb: str, kind: str) -> _Verdict:
    """CREATE/ALTER/DROP of an object kind requests may not change (schemas, functions…).

    Schema objects stay eligible for an operator's break-glass with `allow_ddl`; what
    changes who may do what or where data lives (roles, users, databases, tablespaces,
    foreign servers) never is, and neither is a kind we could not read.
    """
    eligible = bool(kind) and kind not in _NEVER_BREAK_GLASS_KINDS
    return _Verdict(
        StatementClass.REJECTED,
        f"{verb} {kind or '…'} is not allowed".strip(),
        facts=StatementFacts(break_glass_ddl=eligible),
    )


def _into_file(tokens: Sequence[Token]) -> str | None:
    """MySQL `INTO OUTFILE`/`INTO DUMPFILE`, anywhere in the statement (sqlglot cannot parse it)."""
    words = _words(tokens)
    for first, second in itertools.pairwise(words):
        if first == "INTO" and second in ("OUTFILE", "DUMPFILE"):
            return second
    return None


def _classify_explain(tools: _Tools, sql: str, tokens: Sequence[Token]) -> _Verdict:
    """EXPLAIN/DESCRIBE: plan only → SELECT; with ANALYZE the statement runs → its class.

    Options: PostgreSQL `( … )` (any ANALYZE inside counts, even `ANALYZE false` or a
    quoted `"analyze"`, which PostgreSQL accepts as an option name), bare
    `ANALYZE`/`VERBOSE`, MySQL `FORMAT=x`, MariaDB `EXTENDED`/`PARTITIONS`. A dangerous
    function escalates even without ANALYZE (MySQL evaluates constant subqueries while
    planning). MariaDB's `ANALYZE [FORMAT=JSON] stmt` is EXPLAIN ANALYZE: it runs stmt. In
    MySQL an EXPLAIN of anything but a plain query (INSERT/UPDATE/DELETE, FOR UPDATE…) is
    not a read either: MariaDB refuses it in a read-only transaction.
    """
    keyword = _word(tokens[0])
    i, count, analyze = 1, len(tokens), keyword in _ANALYZE
    if i < count and tokens[i].token_type is TokenType.L_PAREN:
        depth = 0
        while i < count:
            token_type = tokens[i].token_type
            depth += (token_type is TokenType.L_PAREN) - (token_type is TokenType.R_PAREN)
            analyze = analyze or tokens[i].text.upper() in _ANALYZE  # `("analyze")` too
            i += 1
            if depth == 0:
                break
    while i < count:
        word = _word(tokens[i])
        if tokens[i].text.upper() in _ANALYZE:
            analyze = True
        elif word == "FORMAT":
            if i + 1 < count and tokens[i + 1].token_type is TokenType.EQ:
                i += 1
            i += 1
        elif word not in ("VERBOSE", "EXTENDED", "PARTITIONS"):
            break
        i += 1
    inner = tokens[i:]
    if not inner:
        return _Verdict(StatementClass.PARSE_FAILURE, f"{keyword} without a statement")
    verdict = _classify_tokens(tools, sql, inner)
    if analyze:  # the statement runs: its facts are the explained statement's
        label = keyword if keyword in _ANALYZE else f"{keyword} ANALYZE"
        return replace(verdict, reason=f"{label}: {verdict.reason}", creates=None)
    plan_only = StatementFacts(tables=verdict.facts.tables)
    if verdict.kind in (
        StatementClass.REJECTED,
        StatementClass.PARSE_FAILURE,
        StatementClass.DANGEROUS_FUNCTION,
    ) or (
        tools.name == "mysql"
        and verdict.kind is not StatementClass.SELECT
        and not _names_a_table(inner)
    ):
        # MariaDB refuses to plan a write or a locking read inside a read-only transaction
        # (error 1792): such an EXPLAIN is not a read, it keeps the class of what it explains.
        return _Verdict(verdict.kind, f"{keyword}: {verdict.reason}", facts=plan_only)
    return _Verdict(StatementClass.SELECT, f"{keyword} (plan only)", facts=plan_only)


def _names_a_table(tokens: Sequence[Token]) -> bool:
    """MySQL `EXPLAIN t [col]` / `DESCRIBE db.t`: the DESCRIBE form, which lists columns."""
    names = [t for t in tokens if t.token_type is not TokenType.DOT]
    return 0 < len(names) <= 2 and all(
        t.token_type in (TokenType.VAR, TokenType.IDENTIFIER) for t in names
    )


def _escalate(verdict: _Verdict, walked: Walked) -> _Verdict:
    """§5.2 escalations, searched through the whole tree; the worst one wins."""
    found = [verdict]
    tree = walked.tree
    if not isinstance(tree, exp.Insert | exp.Update | exp.Delete | exp.Merge):
        writes = walked.all(exp.Insert, exp.Update, exp.Delete, exp.Merge)
        if writes:
            found.append(
                _Verdict(StatementClass.DML, f"writes data ({writes[0].key.upper()} in a CTE)")
            )
    function = _dangerous_function(walked)
    if function is not None:
        found.append(_Verdict(StatementClass.DANGEROUS_FUNCTION, f"calls {function}()"))
    if walked.has(exp.Into):
        found.append(_Verdict(StatementClass.SEMANTIC_ESCALATION, "selects INTO (SELECT … INTO)"))
    if walked.has(exp.Lock):
        found.append(
            _Verdict(StatementClass.SEMANTIC_ESCALATION, "takes row locks (FOR UPDATE/SHARE)")
        )
    worst = max(found, key=lambda v: v.kind.rank)
    if worst is verdict:
        return verdict
    return _Verdict(worst.kind, f"{verdict.reason} that {worst.reason}")


def _dangerous_function(walked: Walked) -> str | None:
    function: exp.Func
    for function in walked.all(exp.Func):
        names = {name.lower() for name in type(function).sql_names()}
        if isinstance(function, exp.Anonymous | exp.AnonymousAggFunc):
            names.add(function.name.lower())  # as written, quotes and schema stripped
        hit = names & DANGEROUS_FUNCTIONS
        if hit:
            return min(hit)
    return None


def _classify_set(tree: exp.Expr, tokens: Sequence[Token], *, list_values: bool) -> _Verdict:
    if isinstance(tree, exp.Set):
        verdict = _classify_set_items(tree)
        return (
            verdict if verdict.kind is StatementClass.REJECTED else _escalate(verdict, Walked(tree))
        )
    if isinstance(tree, exp.Command):
        return _classify_set_words(tokens, list_values=list_values)
    return _Verdict(StatementClass.UNKNOWN, "unrecognised SET statement")


def _not_safe(name: str) -> _Verdict:
    return _rejected(
        f"SET {name} is not allowed; only these variables may be set: "
        + ", ".join(sorted(SAFE_SET_VARIABLES))
    )


def _classify_set_items(tree: exp.Set) -> _Verdict:
    if tree.args.get("unset") or tree.args.get("tag"):
        return _rejected("unrecognised SET form")
    names: list[str] = []
    for item in tree.expressions:
        if not isinstance(item, exp.SetItem):
            return _rejected("unrecognised SET form")
        scope = str(item.args.get("kind") or "").upper()
        if scope in ("NAMES", "CHARACTER SET", "CHARSET"):
            names.append(scope)
            continue
        if scope == "TRANSACTION":
            return _rejected("SET TRANSACTION is not allowed")
        if scope not in ("", "SESSION", "LOCAL"):
            return _rejected(f"SET {scope} is not allowed: only this session may be changed")
        assignment = item.this
        if not isinstance(assignment, exp.EQ):
            return _rejected("unrecognised SET form")
        target = assignment.this
        if isinstance(target, exp.Column) and not target.table:
            name = target.name
        elif isinstance(target, exp.SessionParameter):
            if str(target.args.get("kind") or "session").lower() not in ("session", "local"):
                return _rejected("SET @@GLOBAL is not allowed: only this session may be changed")
            name = target.name
        else:
            return _not_safe(target.sql())
        if name.lower() not in SAFE_SET_VARIABLES:
            return _not_safe(name)
        names.append(name)
    if not names:
        return _rejected("unrecognised SET form")
    return _Verdict(StatementClass.SELECT, "SET " + ", ".join(names), is_safe_set=True)


def _classify_set_words(tokens: Sequence[Token], *, list_values: bool) -> _Verdict:
    """SET forms sqlglot leaves as a Command (TIME ZONE, ROLE, `datestyle = a, b`…).

    A safe name is SELECT only with a plain value (literals, names, signs, and a comma
    list in PostgreSQL, where commas cannot start another assignment as in MySQL).
    """
    words = [*_words(tokens[1:4]), "", ""]
    if words[0] in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
        return _rejected(f"SET {words[0]} is not allowed: only this session may be changed")
    scoped = words[0] in ("SESSION", "LOCAL") and words[1] not in (
        "AUTHORIZATION",
        "CHARACTERISTICS",
    )
    word, following = words[scoped], words[scoped + 1]
    i = 1 + scoped
    if (word, following) in (("TIME", "ZONE"), ("CHARACTER", "SET")):
        return _safe_set_words(f"{word} {following}", tokens[i + 2 :], list_values=False)
    if word in ("NAMES", "CHARSET"):
        return _safe_set_words(word, tokens[i + 1 :], list_values=False)
    if word == "ROLE" or (word, following) == ("DEFAULT", "ROLE"):
        return _rejected("SET ROLE is not allowed")
    if word in ("SESSION", "AUTHORIZATION"):
        return _rejected(f"SET SESSION {following or word} is not allowed".replace("  ", " "))
    if word == "TRANSACTION":
        return _rejected("SET TRANSACTION is not allowed")
    if i + 1 < len(tokens):
        name_token, operator = tokens[i], tokens[i + 1]
        plain = name_token.token_type is TokenType.IDENTIFIER or _PLAIN_NAME.fullmatch(
            name_token.text
        )
        if plain and (operator.token_type is TokenType.EQ or _word(operator) == "TO"):
            if name_token.text.lower() in SAFE_SET_VARIABLES:
                return _safe_set_words(name_token.text, tokens[i + 2 :], list_values=list_values)
            return _not_safe(name_token.text)
    return _not_safe(word or "…")


def _safe_set_words(name: str, value: Sequence[Token], *, list_values: bool) -> _Verdict:
    allowed = _SET_VALUE_TOKENS | {TokenType.COMMA} if list_values else _SET_VALUE_TOKENS
    if value and all(t.token_type in allowed for t in value):
        return _Verdict(StatementClass.SELECT, f"SET {name}", is_safe_set=True)
    return _Verdict(StatementClass.UNKNOWN, f"SET {name} with a value that could not be verified")


# --- redaction ------------------------------------------------------------------------

_LITERAL_NODES = (
    exp.Literal,
    exp.Boolean,
    exp.HexString,
    exp.BitString,
    exp.ByteString,
    exp.National,
    exp.RawString,
    exp.UnicodeString,
    exp.Interval,
    exp.Introducer,
)
_REDACTED_TOKENS = _LITERAL_TOKENS | {TokenType.TRUE, TokenType.FALSE}
#: Never descended into: placeholders keep their numbers, types keep their sizes.
_KEEP_NODES = (exp.Parameter, exp.Placeholder, exp.SessionParameter, exp.DataType, exp.Null)


def _redact_statement(tools: _Tools, sql: str, tokens: Sequence[Token]) -> str:
    try:
        tree = tools.parse_slice(sql, tokens)
    except Exception:
        if _words(tokens[:1])[0] in _KEYWORD_DML:  # classified without a parse (NOTIFY…)
            return _redact_tokens(sql, tokens)
        raise
    if isinstance(tree, exp.Command):  # its text is raw source: redact token by token
        return _redact_tokens(sql, tokens)
    literals = [
        node
        for node in tree.walk(prune=lambda n: isinstance(n, _LITERAL_NODES + _KEEP_NODES))
        if isinstance(node, _LITERAL_NODES)
    ]
    for node in literals:
        if node is tree:
            return "?"
        node.replace(exp.var("?"))
    return tree.sql(dialect=tools.dialect, comments=False)


def _redact_tokens(sql: str, tokens: Sequence[Token]) -> str:
    """Literal tokens become `?`; hints and comments go; `$1`-style placeholders stay."""
    parts: list[str] = []
    previous: Token | None = None
    for token in tokens:
        if token.token_type is TokenType.HINT:
            continue
        adjacent = previous is not None and token.start == previous.end + 1
        placeholder = (
            adjacent and previous is not None and previous.token_type is TokenType.PARAMETER
        )
        if parts and not adjacent:
            parts.append(" ")
        literal = token.token_type in _REDACTED_TOKENS and not placeholder
        parts.append("?" if literal else sql[token.start : token.end + 1])
        previous = token
    return "".join(parts)
