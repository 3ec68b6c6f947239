"""One MySQL lexer: EXPLAIN's one-statement check and the migration warnings read alike.

`has_multiple_statements` (the EXPLAIN and parse-error path of `adapters.mysql.database`)
and `leading_keywords` / `implicit_commit_keywords` / `statements` (the migration path of
`adapters.mysql.migrations`) are checked against one table, so a comment or a quote can
never end a statement for one of them and not for the other.
"""

from __future__ import annotations

import pytest

from adapters.mysql import database as mysql_database
from adapters.mysql import migrations as mysql_migrations
from adapters.mysql.lexer import (
    Token,
    TokenKind,
    implicit_commit_keywords,
    leading_keywords,
    statements,
    tokens,
)

#: (text, the statements MySQL sees). A comment reads as a space in a statement.
TRICKY: list[tuple[str, list[str]]] = [
    ("SELECT 1", ["SELECT 1"]),
    ("SELECT 1;", ["SELECT 1"]),
    ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
    # `--` is a comment only before whitespace, a control character or the end.
    ("SELECT 1 --x; DROP TABLE t", ["SELECT 1 --x", "DROP TABLE t"]),
    ("SELECT 1 --1; DROP TABLE t", ["SELECT 1 --1", "DROP TABLE t"]),
    ("SELECT 1 -- x; DROP TABLE t", ["SELECT 1"]),
    ("SELECT 1 --\t; DROP TABLE t\nCREATE TABLE u (a int)", ["SELECT 1  \nCREATE TABLE u (a int)"]),
    ("SELECT 1 --\x01; DROP TABLE t", ["SELECT 1"]),
    ("SELECT 1; --", ["SELECT 1"]),
    ("SELECT 1 ---x; DROP TABLE t", ["SELECT 1 ---x", "DROP TABLE t"]),
    ("SELECT 1 --- x; DROP TABLE t", ["SELECT 1 -"]),
    ("SELECT 1; -- trailing comment", ["SELECT 1"]),
    ("SELECT 1; # trailing comment\n", ["SELECT 1"]),
    ("SELECT 1 #; DROP TABLE t\n; ALTER TABLE t", ["SELECT 1", "ALTER TABLE t"]),
    ("SELECT 1 /* ; */; SELECT 2", ["SELECT 1", "SELECT 2"]),
    ("SELECT 1 /* unterminated; DROP TABLE t", ["SELECT 1"]),
    # Executable comments are code, with or without a version; their markers read as space.
    ("SELECT 1;/*! SELECT 2 */", ["SELECT 1", "SELECT 2"]),
    ("/*!40101 SET NAMES utf8 */;", ["SET NAMES utf8"]),
    (
        "/*!50001 CREATE ALGORITHM=UNDEFINED */ VIEW v AS SELECT 1",
        ["CREATE ALGORITHM=UNDEFINED   VIEW v AS SELECT 1"],
    ),
    ("SELECT 1 /*M!100101 , 2 */; DROP TABLE t", ["SELECT 1   , 2", "DROP TABLE t"]),
    ("SELECT 2 */ 1", ["SELECT 2 */ 1"]),
    # Quotes and backticks hold `;`, `--`, `#` and `/*`.
    ("SELECT 'a;b', \"c;d\", `e;f` FROM t", ["SELECT 'a;b', \"c;d\", `e;f` FROM t"]),
    ("SELECT '-- x;', \"# y;\", `/* z;` FROM t", ["SELECT '-- x;', \"# y;\", `/* z;` FROM t"]),
    ("SELECT 'it''s; fine'", ["SELECT 'it''s; fine'"]),
    ("SELECT 'esc\\'; still string'", ["SELECT 'esc\\'; still string'"]),
    ('SELECT "esc\\"; still string"', ['SELECT "esc\\"; still string"']),
    ("SELECT `a``;b` FROM t; SELECT 2", ["SELECT `a``;b` FROM t", "SELECT 2"]),
    ("SELECT `a\\`; SELECT 2", ["SELECT `a\\`", "SELECT 2"]),  # no backslash escape in ``
    ("SELECT 'unterminated; DROP TABLE t", ["SELECT 'unterminated; DROP TABLE t"]),
    ("SELECT 'ends in a backslash\\", ["SELECT 'ends in a backslash\\"]),
    # Empty statements: before code they count (MySQL refuses them), after it they do not.
    ("; SELECT 1", ["", "SELECT 1"]),
    ("SELECT 1;; SELECT 2", ["SELECT 1", "", "SELECT 2"]),
    ("SELECT 1;;", ["SELECT 1"]),
    # Only ASCII whitespace separates; a no-break space is code to MySQL.
    ("SELECT 1;\u00a0", ["SELECT 1", "\u00a0"]),
    # Nothing but comments.
    ("-- only\n", []),
    ("/* nothing to do */\n-- really nothing\n# at all", []),
    ("", []),
]


@pytest.mark.parametrize(("sql", "expected"), TRICKY)
def test_statements(sql: str, expected: list[str]) -> None:
    assert statements(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), TRICKY)
def test_both_callers_scan_alike(sql: str, expected: list[str]) -> None:
    """What EXPLAIN's check and the migration warnings see follows from the same split."""
    assert mysql_database.has_multiple_statements(sql) is (len(expected) > 1)
    keywords = [s.split()[0].lstrip("(").upper() for s in expected if s[:1].isalpha()]
    assert mysql_migrations.implicit_commit_keywords(sql) == [
        k for k in keywords if k in ("CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME")
    ]
    # "Only comments" (an empty query the migration runner accepts) means no statements.
    assert (not mysql_migrations.statements(sql)) is (expected == [])


@pytest.mark.parametrize(("sql", "_expected"), TRICKY)
def test_tokens_give_the_text_back(sql: str, _expected: list[str]) -> None:
    assert "".join(token.text for token in tokens(sql)) == sql


def test_token_kinds() -> None:
    sql = "SELECT /*!50001 'a;' */ --x -- c\n#d\n`b`;"
    assert list(tokens(sql)) == [
        Token(TokenKind.CODE, "SELECT"),
        Token(TokenKind.SPACE, " "),
        Token(TokenKind.EXECUTABLE_MARK, "/*!50001"),
        Token(TokenKind.SPACE, " "),
        Token(TokenKind.QUOTED, "'a;'"),
        Token(TokenKind.SPACE, " "),
        Token(TokenKind.EXECUTABLE_MARK, "*/"),
        Token(TokenKind.SPACE, " "),
        Token(TokenKind.CODE, "-"),
        Token(TokenKind.CODE, "-"),
        Token(TokenKind.CODE, "x"),
        Token(TokenKind.SPACE, " "),
        Token(TokenKind.COMMENT, "-- c"),
        Token(TokenKind.SPACE, "\n"),
        Token(TokenKind.COMMENT, "#d"),
        Token(TokenKind.SPACE, "\n"),
        Token(TokenKind.QUOTED, "`b`"),
        Token(TokenKind.SEMICOLON, ";"),
    ]


def test_leading_keywords_skip_comments_and_literals() -> None:
    sql = (
        "-- DROP nothing\ncreate table t (a int);\n"
        "INSERT INTO t VALUES ('x; drop table t');  # alter\n"
        "/* rename */ (SELECT 1); update t set a = 2;"
    )
    assert leading_keywords(sql) == ["CREATE", "INSERT", "SELECT", "UPDATE"]
    assert implicit_commit_keywords(sql) == ["CREATE"]
    assert implicit_commit_keywords("truncate t; RENAME TABLE a TO b; alter table x") == [
        "TRUNCATE",
        "RENAME",
        "ALTER",
    ]
    assert implicit_commit_keywords("INSERT INTO t VALUES ('it''s; DROP')") == []
    assert leading_keywords("'just a literal'; SELECT 1") == ["SELECT"]


def test_mysqldump_view_headers_warn_of_their_implicit_commit() -> None:
    """An executable comment is code: the CREATE inside it commits implicitly."""
    sql = "/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50001 VIEW v AS SELECT 1 */;"
    assert implicit_commit_keywords(sql) == ["CREATE"]
