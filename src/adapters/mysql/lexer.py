"""Where MySQL sees comments, quoted text and the end of a statement, in one place.

The agent never rewrites or splits the SQL it runs: the signed text goes to the server as
is. It still needs to know what the server will see, to refuse EXPLAIN of several
statements, to name a parse error caused by a second statement, to warn that a migration
holds statements that commit implicitly, and to accept a migration of only comments. All
of these read the text through `tokens`, so they can never disagree about where a comment
or a string starts and ends. The rules are MySQL's and MariaDB's:

* `#` starts a comment to the end of the line; so does `--`, but only when followed by
  whitespace, a control character or the end of the text: `1 --1` is `1 - -1`.
* `/* … */` is a comment, except the executable forms `/*! … */` (MySQL and MariaDB, with
  an optional version number) and `/*M! … */` (MariaDB), whose content is code. Content
  gated on a server version is treated as code whatever the version: a check that sees
  code where there may be none errs on the safe side.
* `'…'` and `"…"` are strings, where a backslash escapes the next character and a doubled
  quote stands for one; `` `…` `` is an identifier, where only a doubled backtick escapes.
* `;` outside all of these ends a statement. Only ASCII whitespace separates tokens; any
  other character (a no-break space, say) is code to MySQL, so it is code here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum, auto
from typing import NamedTuple

#: The only characters MySQL's lexer reads as whitespace.
ASCII_WHITESPACE = " \t\n\r\v\f"


class TokenKind(Enum):
    CODE = auto()
    SPACE = auto()
    QUOTED = auto()
    COMMENT = auto()
    #: `/*!50001`, `/*M!` or the `*/` closing one: markers around code, not code.
    EXECUTABLE_MARK = auto()
    SEMICOLON = auto()


class Token(NamedTuple):
    kind: TokenKind
    text: str


_TOKEN = re.compile(
    r"""
      (?P<SPACE>[ \t\n\r\v\f]+)
    | (?P<SEMICOLON>;)
      # `#`, or `--` before whitespace, a control character or the end; up to the newline.
    | (?P<LINE_COMMENT>(?:\#|--(?=[\x00-\x20\x7f]|\Z))[^\n]*)
      # `/*!`, `/*!50001`, `/*M!100101`: the content that follows is code.
    | (?P<EXECUTABLE_OPEN>/\*M?![0-9]*)
    | (?P<BLOCK_COMMENT>/\*.*?(?:\*/|\Z))
    | (?P<EXECUTABLE_CLOSE>\*/)
      # A backslash escapes one character (or ends the text); a doubled quote is one quote.
    | (?P<QUOTED>
          '(?:[^'\\]+|\\.?|'')*(?:'|\Z)
        | "(?:[^"\\]+|\\.?|"")*(?:"|\Z)
        | `(?:[^`]+|``)*(?:`|\Z)
      )
      # A run of characters that cannot start anything above, or one that did not.
    | (?P<CODE>[^ \t\n\r\v\f;\#'"`/*-]+|.)
    """,
    re.VERBOSE | re.DOTALL,
)

_KIND_OF_GROUP = {
    "SPACE": TokenKind.SPACE,
    "SEMICOLON": TokenKind.SEMICOLON,
    "LINE_COMMENT": TokenKind.COMMENT,
    "EXECUTABLE_OPEN": TokenKind.EXECUTABLE_MARK,
    "BLOCK_COMMENT": TokenKind.COMMENT,
    "QUOTED": TokenKind.QUOTED,
    "CODE": TokenKind.CODE,
}


def tokens(sql: str) -> Iterator[Token]:
    """The text as MySQL's lexer splits it; the tokens' texts joined give `sql` back.

    An unterminated comment or quote runs to the end of the text (the server refuses it).
    """
    in_executable = False
    for match in _TOKEN.finditer(sql):
        group = match.lastgroup
        assert group is not None
        text = match.group()
        if group == "EXECUTABLE_CLOSE":
            # `*/` closes an executable comment; anywhere else it is two characters of code.
            kind = TokenKind.EXECUTABLE_MARK if in_executable else TokenKind.CODE
            in_executable = False
        else:
            kind = _KIND_OF_GROUP[group]
            if group == "EXECUTABLE_OPEN":
                in_executable = True
        yield Token(kind, text)


def statements(sql: str) -> list[str]:
    """The statements MySQL would see, each without its comments and surrounding space.

    Comments and executable-comment markers read as a space; quoted text is kept. A piece
    between two semicolons with no code in it stays, as an empty string (MySQL refuses
    it); the pieces after the last statement with code are dropped, since a trailing `;`
    or comment runs nothing. So a text of only comments has no statements at all.
    """
    pieces: list[str] = []
    current: list[str] = []
    for kind, text in tokens(sql):
        if kind is TokenKind.SEMICOLON:
            pieces.append("".join(current).strip(ASCII_WHITESPACE))
            current = []
        elif kind is TokenKind.COMMENT or kind is TokenKind.EXECUTABLE_MARK:
            current.append(" ")
        else:
            current.append(text)
    pieces.append("".join(current).strip(ASCII_WHITESPACE))
    while pieces and not pieces[-1]:
        pieces.pop()
    return pieces


def has_multiple_statements(sql: str) -> bool:
    """True when something besides comments follows a top-level `;`.

    Used to refuse EXPLAIN of several statements by name and to explain a parse error; the
    single-statement connection is the backstop.
    """
    return len(statements(sql)) > 1


_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z_]+)")

#: Statements that make MySQL commit implicitly, so a migration holding one is not atomic.
IMPLICIT_COMMIT_KEYWORDS = ("CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME")


def leading_keywords(sql: str) -> list[str]:
    """The first word of each statement, upper-cased (a statement of only a literal has none).

    Only a heuristic for warnings; the SQL that runs is always the exact approved text.
    """
    keywords: list[str] = []
    for statement in statements(sql):
        match = _FIRST_WORD.match(statement)
        if match:
            keywords.append(match.group(1).upper())
    return keywords


def implicit_commit_keywords(sql: str) -> list[str]:
    """Leading keywords of statements that commit implicitly on MySQL (for a warning)."""
    return [k for k in leading_keywords(sql) if k in IMPLICIT_COMMIT_KEYWORDS]
