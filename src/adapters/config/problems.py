"""What the agent's and the server's TOML loaders share: reading, and how problems read.

Both loaders (adapters.config.agent, adapters.config.server) follow the same steps: read
and parse the file, expand `${VAR}`, check the shape with strict pydantic models, then
check the meaning. This module holds the common parts of the first three, so the two
files' messages stay worded alike: one line per problem, `<file>: <key>: <message>`,
all raised together as one ConfigError; pydantic's own text never reaches the user.

What differs per file (which values are secret, hints for missing keys, keys that are
gone) is passed in through a `FileShape`.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from adapters.config.env_expansion import ExpansionError, KeyPath, expand_values
from domain.shared.errors import ConfigError

__all__ = [
    "NOT_SUPPORTED_YET",
    "FileShape",
    "Problem",
    "StrictModel",
    "config_error",
    "dataclass_default",
    "describe",
    "format_key",
    "key_pattern",
    "load_document",
    "problem_lines",
]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_Model = TypeVar("_Model", bound=BaseModel)


class StrictModel(BaseModel):
    """No unknown keys, no coercion: what the file says is exactly what it means."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def dataclass_default(cls: type[Any], name: str) -> Any:
    """Defaults live once, in the settings dataclasses; the file models read them there."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            return item.default
    raise KeyError(name)


# --- problems and how they read ---------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: KeyPath
    message: str


def format_key(key: KeyPath) -> str:
    """`databases.app.production.url`, `workflows[0].steps[1]`; odd names quoted as in TOML."""
    text = ""
    for part in key:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            text += f".{name}" if text else name
    return text


def problem_lines(path: Path, problems: Sequence[Problem]) -> list[str]:
    return [
        f"{path}: {format_key(p.key)}: {p.message}" if p.key else f"{path}: {p.message}"
        for p in problems
    ]


def config_error(path: Path, problems: Sequence[Problem]) -> ConfigError:
    return ConfigError("\n".join(problem_lines(path, problems)))


def describe(value: Any, *, hidden: bool = False) -> str:
    """`string "2"`, `integer 5`, `boolean true`: what the file actually holds.

    `hidden` keeps a secret string (a token, a URL with a password) out of the message.
    """
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        if hidden:
            return "string (value hidden)"
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return f"date/time {value.isoformat()}"
    return type(value).__name__


# --- reading ----------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: cannot read config: not UTF-8 (byte {error.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def load_document(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The file parsed as TOML, `${VAR}` expanded in string values from `environ`."""
    document = _read(path)
    try:
        return expand_values(document, environ)
    except ExpansionError as error:
        problems = [Problem(p.path, p.message) for p in error.problems]
        raise config_error(path, problems) from None


# --- pydantic errors in our words -------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def key_pattern(key: KeyPath) -> KeyPath:
    """The key with list indexes as "*", to look up hints that hold for every entry."""
    return tuple("*" if isinstance(part, int) else part for part in key)


def _unwrap_optional(annotation: Any) -> Any:
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) is not list and len(args) == 1:
        return args[0]
    return annotation


def _model_at(root: type[BaseModel], key: KeyPath) -> type[BaseModel] | None:
    """The model whose fields sit at `key`, following the annotations (tables, lists,
    optionals), so "did you mean" follows the models as they change."""
    annotation: Any = root
    for part in key:
        annotation = _unwrap_optional(annotation)
        if isinstance(part, int):
            if get_origin(annotation) is not list:
                return None
            annotation = get_args(annotation)[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = annotation.model_fields.get(part)
            if found is None:
                return None
            annotation = found.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    annotation = _unwrap_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _no_hint(key: KeyPath, kind: str, value: Any) -> str:
    return ""


#: The words every "not supported yet" message carries (docs/server.md §3.3).
NOT_SUPPORTED_YET = "not supported yet"


def _leaf_keys(annotation: Any, prefix: tuple[str, ...]) -> set[str]:
    """The dotted keys under `annotation`: list entries are transparent, a table of named
    tables adds `*`, a field whose value is no table is a key."""
    annotation = _unwrap_optional(annotation)
    origin = get_origin(annotation)
    if origin is list:
        return _leaf_keys(get_args(annotation)[0], prefix)
    if origin is dict:
        return _leaf_keys(get_args(annotation)[1], (*prefix, "*"))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        keys: set[str] = set()
        for name, found in annotation.model_fields.items():
            keys |= _leaf_keys(found.annotation, (*prefix, name))
        return keys
    return {".".join(prefix)}


@dataclass(frozen=True)
class FileShape(Generic[_Model]):
    """One config file's pydantic model and the file-specific parts of its messages.

    `missing_hints` and `special_keys` are looked up with list indexes as "*";
    `special_keys` names keys that are not unknown but gone or renamed; `expected_hint`
    adds to a wrong-type message (say, how to write an array of tables).
    """

    root: type[_Model]
    is_secret: Callable[[KeyPath], bool]
    missing_hints: Mapping[KeyPath, str]
    special_keys: Mapping[KeyPath, str] = field(default_factory=dict)
    expected_hint: Callable[[KeyPath, str, Any], str] = _no_hint

    def describe(self, value: Any, key: KeyPath = ()) -> str:
        return describe(value, hidden=self.is_secret(key))

    def accepted_keys(self) -> frozenset[str]:
        """Every key the file accepts, dotted as the configuration reference lists them:
        `workflows.steps.mode` (list entries transparent), `databases.*.*.url` (named
        tables as `*`)."""
        return frozenset(_leaf_keys(self.root, ()))

    def not_supported_keys(self) -> frozenset[str]:
        """The keys refused with "not supported yet", dotted as `accepted_keys`."""
        return frozenset(
            ".".join(str(part) for part in key if part != "*")
            for key, message in self.special_keys.items()
            if NOT_SUPPORTED_YET in message
        )

    def validate(self, document: dict[str, Any], path: Path) -> _Model:
        try:
            return self.root.model_validate(document)
        except ValidationError as error:
            problems = [self._translate(e) for e in error.errors(include_url=False)]
            raise config_error(path, problems) from None

    def _unknown_key(self, key: KeyPath) -> str:
        """A known old key's message, else the nearest valid key, else the valid keys."""
        special = self.special_keys.get(key_pattern(key))
        if special is not None:
            return special
        model = _model_at(self.root, key[:-1])
        valid = list(model.model_fields) if model is not None else []
        near = difflib.get_close_matches(str(key[-1]), valid, n=1)
        if near:
            return f"unknown key (did you mean {near[0]}?)"
        if valid:
            return f"unknown key (valid keys here: {', '.join(valid)})"
        return "unknown key"

    def _translate(self, error: ErrorDetails) -> Problem:
        """One pydantic error as one line of ours; pydantic's own wording is never shown."""
        key: KeyPath = tuple(error["loc"])
        kind = error["type"]
        ctx = error.get("ctx", {})
        value = error.get("input")
        if kind == "extra_forbidden":
            return Problem(key, self._unknown_key(key))
        if kind == "missing":
            return Problem(key, self.missing_hints.get(key_pattern(key), "required key is missing"))
        if kind in _EXPECTED:
            message = f"expected {_EXPECTED[kind]}, got {self.describe(value, key)}"
            return Problem(key, message + self.expected_hint(key, kind, value))
        if kind == "greater_than_equal":
            return Problem(key, f"must be at least {ctx['ge']}, got {self.describe(value, key)}")
        if kind == "less_than_equal":
            return Problem(key, f"must be at most {ctx['le']}, got {self.describe(value, key)}")
        if kind == "string_too_short":
            return Problem(key, "must not be empty")
        return Problem(key, f"invalid value ({kind})")
