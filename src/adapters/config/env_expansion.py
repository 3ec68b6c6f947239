"""`${VAR}` and `${VAR:-default}` expansion inside config string values.

The dbward 0.2 agent expands over the raw file text, so a `${...}` in a comment can fail the
load and a value containing `"` can break the TOML around it (docs/protocol.md §16.13).
Here the file is parsed first and only string *values* are expanded, with the shell's
meaning:

* `${VAR}` is VAR's value; an unset VAR is an error (a silently empty token or URL is worse).
* `${VAR:-default}` is `default` when VAR is unset *or empty*, as in the shell.
* `$${` is a literal `${` (the only escape; a lone `$` or `$$` is left as it is).
* anything else starting with `${` is an error: unclosed, empty, a bad name, another form
  such as `${VAR-x}`, or a `${` nested inside a default.

The environment is always passed in, so the expansion is a pure function of its inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Where a value sits in the parsed document: table keys and array indexes.
KeyPath = tuple[str | int, ...]

_OPEN = "${"
_ESCAPE = "$${"
_DEFAULT_SEPARATOR = ":-"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ExpansionProblem:
    """One string that could not be expanded, and where it sits in the document."""

    path: KeyPath
    message: str


class ExpansionError(ValueError):
    """Expansion failed; carries every problem so a user can fix them all in one go."""

    def __init__(self, problems: tuple[ExpansionProblem, ...]) -> None:
        super().__init__("\n".join(problem.message for problem in problems))
        self.problems = problems


def expand_string(text: str, environ: Mapping[str, str]) -> str:
    """Expand every `${...}` in one string value; raise ExpansionError on the first problem."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith(_ESCAPE, i):
            out.append(_OPEN)
            i += len(_ESCAPE)
        elif text.startswith(_OPEN, i):
            end = text.find("}", i + len(_OPEN))
            if end < 0:
                raise _single(
                    f"unclosed ${{ at character {i + 1}: add the closing }} "
                    "(or write $${ for a literal ${)"
                )
            out.append(_substitute(text[i + len(_OPEN) : end], environ))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def expand_values(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Expand string values throughout a parsed TOML document; keys are never touched.

    Returns a new document. Every failing string is reported, each with its key path.
    """
    problems: list[ExpansionProblem] = []
    expanded = _expand_node(data, (), environ, problems)
    if problems:
        raise ExpansionError(tuple(problems))
    result: dict[str, Any] = expanded
    return result


def _expand_node(
    node: Any, path: KeyPath, environ: Mapping[str, str], problems: list[ExpansionProblem]
) -> Any:
    """Walk tables and arrays; non-string scalars (numbers, dates, booleans) pass unchanged."""
    if isinstance(node, str):
        try:
            return expand_string(node, environ)
        except ExpansionError as error:
            problems.extend(ExpansionProblem(path, p.message) for p in error.problems)
            return node
    if isinstance(node, dict):
        return {
            key: _expand_node(value, (*path, key), environ, problems) for key, value in node.items()
        }
    if isinstance(node, list):
        return [
            _expand_node(item, (*path, index), environ, problems) for index, item in enumerate(node)
        ]
    return node


def _substitute(body: str, environ: Mapping[str, str]) -> str:
    """Resolve the inside of one `${...}` (the text between the braces)."""
    match = _NAME.match(body)
    if match is None:
        if not body:
            raise _single("empty ${}: write ${NAME} or ${NAME:-default}")
        raise _single(
            f"malformed ${{{body}}}: not a valid variable name "
            "(use letters, digits and _, not starting with a digit)"
        )
    name, rest = match.group(), body[match.end() :]
    if not rest:
        value = environ.get(name)
        if value is None:
            raise _single(
                f"undefined environment variable ${{{name}}}; set it or write ${{{name}:-default}}"
            )
        return value
    if not rest.startswith(_DEFAULT_SEPARATOR):
        raise _single(
            f"malformed ${{{name}{rest}}}: only ${{{name}}} and ${{{name}:-default}} are supported"
        )
    default = rest[len(_DEFAULT_SEPARATOR) :]
    if _OPEN in default:
        raise _single(f"nested ${{ in the default of ${{{name}:-...}} is not supported")
    return environ.get(name) or default


def _single(message: str) -> ExpansionError:
    return ExpansionError((ExpansionProblem((), message),))
