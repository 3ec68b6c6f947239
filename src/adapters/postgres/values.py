"""PostgreSQL value encoding for `execute_select` results (docs/protocol.md §5.5).

Values are read in the server's text form and converted only where the protocol says so:
integers become JSON integers, floats JSON numbers (NaN and the infinities as strings),
booleans `true`/`false`, json/jsonb parsed JSON, arrays nested JSON arrays; everything else
(numeric, money, dates, times, intervals, uuid, inet, enums, ...) stays exactly the text the
server sent, so no precision or formatting is lost on the way.

Speed matters here (a result can hold a million rows), so the work is split in two:

* psycopg's C loaders turn the wire text into Python values: its integer, float and boolean
  loaders for those types, its plain text loader for everything else (`select_adapters`).
* `RowEncoder`, built once per result set, fixes up only the columns that need Python work
  (floats, json, arrays) and encodes each row with orjson. Text columns get no per-value
  Python code at all.

Everything below except `select_adapters` is pure and unit-tested without a database.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache, partial
from itertools import repeat
from typing import Any, cast

import orjson
import psycopg.postgres
from psycopg.adapt import AdaptersMap
from psycopg.types.string import TextLoader

#: PostgreSQL arrays have at most 6 dimensions (MAXDIM); deeper text is not an array value.
MAX_ARRAY_DEPTH = 6

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


class Kind(Enum):
    """How a column's text form becomes JSON."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    JSON = "json"
    ARRAY = "array"
    TEXT = "text"


@dataclass(frozen=True)
class PgType:
    """What the encoder needs to know about one type: its name and how to convert it.

    `element` and `delimiter` describe array elements (`delimiter` is the element type's
    `typdelim`: `,` for all built-in types but `box`, which uses `;`).
    """

    oid: int
    name: str
    kind: Kind
    element: Kind | None = None
    delimiter: str = ","


_SCALAR_KINDS = {
    "int2": Kind.INT,
    "int4": Kind.INT,
    "int8": Kind.INT,
    "float4": Kind.FLOAT,
    "float8": Kind.FLOAT,
    "bool": Kind.BOOL,
    "json": Kind.JSON,
    "jsonb": Kind.JSON,
}

#: Kinds whose values psycopg's own C loaders already produce in the protocol's shape.
_NATIVE_LOADER_KINDS = frozenset({Kind.INT, Kind.FLOAT, Kind.BOOL})


def _builtin_types() -> dict[int, PgType]:
    """Every type psycopg knows as built in (PostgreSQL's own catalog, fixed oids)."""
    types: dict[int, PgType] = {}
    for info in psycopg.postgres.types:
        kind = _SCALAR_KINDS.get(info.name, Kind.TEXT)
        types[info.oid] = PgType(info.oid, info.name, kind)
        if info.array_oid:
            types[info.array_oid] = PgType(
                info.array_oid, "_" + info.name, Kind.ARRAY, kind, info.delimiter
            )
    return types


BUILTIN_TYPES: dict[int, PgType] = _builtin_types()

#: A type the encoder could not identify: its text is sent as is, which is always safe.
UNKNOWN_TYPE_NAME = "unknown"


def unknown_type(oid: int) -> PgType:
    return PgType(oid, UNKNOWN_TYPE_NAME, Kind.TEXT)


@dataclass(frozen=True)
class CatalogType:
    """One `pg_type` row, as fetched for a type that is not built in."""

    oid: int
    name: str
    typtype: str  # b base, c composite, d domain, e enum, p pseudo, r range, m multirange
    base_oid: int  # typbasetype: the type a domain is over (0 otherwise)
    element_oid: int  # typelem: the element type of an array (0 otherwise)
    category: str  # typcategory: A for arrays
    delimiter: str  # typdelim


def resolve_catalog_types(
    wanted: Iterable[int], catalog: dict[int, CatalogType]
) -> dict[int, PgType]:
    """Turn `pg_type` rows into encoder types: domains act as their base type (§5.5),
    arrays of user types (enums, domains, composites) become arrays of their element's kind.

    `catalog` must hold the wanted oids plus the domain bases and array elements they refer
    to (what is missing is treated as text).
    """

    def kind_of(oid: int, depth: int = 0) -> Kind:
        builtin = BUILTIN_TYPES.get(oid)
        if builtin is not None:
            return builtin.kind
        row = catalog.get(oid)
        if row is None or depth > 8:
            return Kind.TEXT
        if row.typtype == "d":
            return kind_of(row.base_oid, depth + 1)
        if row.category == "A" and row.element_oid:
            return Kind.ARRAY
        return Kind.TEXT

    resolved: dict[int, PgType] = {}
    for oid in wanted:
        if oid in BUILTIN_TYPES:
            resolved[oid] = BUILTIN_TYPES[oid]
            continue
        row = catalog.get(oid)
        if row is None:
            resolved[oid] = unknown_type(oid)
            continue
        kind = kind_of(oid)
        if kind is Kind.ARRAY:
            array_oid = oid
            while array_oid in catalog and catalog[array_oid].typtype == "d":
                array_oid = catalog[array_oid].base_oid  # a domain over an array type
            array = BUILTIN_TYPES.get(array_oid)
            if array is not None:
                resolved[oid] = PgType(oid, row.name, Kind.ARRAY, array.element, array.delimiter)
                continue
            element_oid = catalog[array_oid].element_oid
            element_kind = kind_of(element_oid)
            element_row = catalog.get(element_oid)
            builtin_element = BUILTIN_TYPES.get(element_oid)
            delimiter = (
                element_row.delimiter
                if element_row is not None
                else (builtin_element.delimiter if builtin_element is not None else ",")
            )
            if element_kind is Kind.ARRAY:  # PostgreSQL has no arrays of arrays
                element_kind = Kind.TEXT
            resolved[oid] = PgType(oid, row.name, Kind.ARRAY, element_kind, delimiter or ",")
        else:
            resolved[oid] = PgType(oid, row.name, kind)
    return resolved


def catalog_dependencies(rows: Iterable[CatalogType]) -> set[int]:
    """Oids a set of `pg_type` rows refers to (domain bases, array elements)."""
    wanted: set[int] = set()
    for row in rows:
        for oid in (row.base_oid, row.element_oid):
            if oid and oid not in BUILTIN_TYPES:
                wanted.add(oid)
    return wanted


# --- conversions from the server's text ---------------------------------------------------


def decode_text(raw: bytes) -> str:
    """Text as sent; bytes that are not UTF-8 (an SQL_ASCII database) become `\\x<hex>`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "\\x" + raw.hex()


def int_from_text(text: str) -> int | str:
    """A 64-bit integer, or the text itself when it is not one (§5.5)."""
    try:
        value = int(text)
    except ValueError:
        return text
    return value if _I64_MIN <= value <= _I64_MAX else text


def float_value(value: float) -> float | str:
    """JSON has no NaN or infinities: those go out as PostgreSQL spells them."""
    if -math.inf < value < math.inf:
        return value
    if value != value:  # noqa: PLR0124 - the NaN test
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def float_from_text(text: str) -> float | str:
    try:
        return float_value(float(text))
    except ValueError:
        return text


def bool_from_text(text: str) -> bool:
    return text in ("t", "true", "1")


def _json_int(text: str) -> int | float:
    value = int(text)
    # Outside 64 bits JSON parsers (and the dbward 0.2 agent) fall back to a double.
    return value if _I64_MIN <= value <= _I64_MAX else float(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_from_text(text: str) -> Any:
    """The parsed value of a json/jsonb text; the text itself if it does not parse."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:  # orjson refuses integers beyond 64 bits, which the json type allows
        value = json.loads(text, parse_int=_json_int, parse_constant=_no_constant)
        orjson.dumps(value)  # and lone surrogates, which it could not encode later
    except (ValueError, TypeError):
        return text
    return value


class _Malformed(ValueError):
    """The array text is not a plain array literal; it is sent whole, as text."""


@cache
def _array_tokens(delimiter: str) -> re.Pattern[str]:
    d = re.escape(delimiter)
    return re.compile(
        rf'(?P<open>\{{)|(?P<close>\}})|(?P<delim>{d})|"(?P<quoted>(?:[^"\\]|\\.)*)"'
        rf'|(?P<bare>(?:[^{{}}"\\{d}]|\\.)+)',
        re.DOTALL,
    )


_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)


def parse_array(
    text: str, element: Callable[[str], Any] = str, delimiter: str = ","
) -> list[Any] | str:
    """A PostgreSQL array's text form as nested JSON lists (§5.5).

    Unquoted `NULL` is null while a quoted `"NULL"` is the string; backslash escapes are
    honoured. Text with explicit bounds (`[0:1]={...}`), deeper than 6 dimensions, or not a
    well-formed array comes back unchanged, as one string.
    """
    if not text.startswith("{"):
        return text  # explicit bounds, or not an array literal at all
    if '"' not in text and "\\" not in text and text.find("{", 1) < 0:
        # The common one-dimensional case without quoting: no tokenizer needed.
        if not text.endswith("}") or "}" in text[1:-1]:
            return text
        inner = text[1:-1]
        if not inner:
            return []
        items = inner.split(delimiter)
        if any(not item.strip() for item in items):
            return text
        return [None if item.strip().upper() == "NULL" else element(item.strip()) for item in items]
    try:
        return _parse_nested(text, element, delimiter)
    except _Malformed:
        return text


def _parse_nested(text: str, element: Callable[[str], Any], delimiter: str) -> list[Any]:
    root: list[Any] = []
    stack: list[list[Any]] = []
    # Per open level: does it hold sub-arrays (True), scalars (False), or nothing yet?
    holds_arrays: list[bool | None] = []
    expect_item = True  # an item may start here (after `{` or a delimiter)
    done = False
    position = 0

    def add(item: Any, is_array: bool) -> None:
        if holds_arrays[-1] is None:
            holds_arrays[-1] = is_array
        elif holds_arrays[-1] is not is_array:
            raise _Malformed(text)  # sub-arrays and scalars never mix at one level
        stack[-1].append(item)

    for match in _array_tokens(delimiter).finditer(text):
        if match.start() != position and text[position : match.start()].strip():
            raise _Malformed(text)
        position = match.end()
        if done:
            if match.group().strip():
                raise _Malformed(text)
            continue
        kind = match.lastgroup
        if kind == "bare" and not match.group("bare").strip():
            continue  # whitespace between tokens
        if kind == "open":
            if not expect_item:
                raise _Malformed(text)
            child: list[Any] = root if not stack else []
            if stack:
                add(child, True)
            stack.append(child)
            holds_arrays.append(None)
            if len(stack) > MAX_ARRAY_DEPTH:
                raise _Malformed(text)
            expect_item = True
        elif kind == "close":
            if not stack or (expect_item and stack[-1]):
                raise _Malformed(text)  # `{1,}` or an unbalanced brace
            stack.pop()
            holds_arrays.pop()
            expect_item = False
            done = not stack
        elif kind == "delim":
            if expect_item or not stack:
                raise _Malformed(text)
            expect_item = True
        else:
            if not expect_item or not stack:
                raise _Malformed(text)
            if kind == "quoted":
                add(element(_BACKSLASH.sub(r"\1", match.group("quoted"))), False)
            else:
                bare = match.group("bare").strip()
                if bare.upper() == "NULL":
                    add(None, False)
                else:
                    add(element(_BACKSLASH.sub(r"\1", bare)), False)
            expect_item = False
    if not done or text[position:].strip():
        raise _Malformed(text)
    return root


# --- per-kind converters ------------------------------------------------------------------

_TEXT_CONVERTERS: dict[Kind, Callable[[str], Any]] = {
    Kind.INT: int_from_text,
    Kind.FLOAT: float_from_text,
    Kind.BOOL: bool_from_text,
    Kind.JSON: json_from_text,
    Kind.TEXT: str,
    Kind.ARRAY: str,  # arrays of arrays do not exist; see text_converter
}


def text_converter(pg_type: PgType) -> Callable[[str], Any]:
    """Server text -> JSON value for one type (array elements use their element's rule)."""
    if pg_type.kind is Kind.ARRAY:
        element = _TEXT_CONVERTERS[pg_type.element or Kind.TEXT]
        return partial(parse_array, element=element, delimiter=pg_type.delimiter)
    return _TEXT_CONVERTERS[pg_type.kind]


def loaded_value_fixer(pg_type: PgType, *, raw_text: bool = False) -> Callable[[Any], Any] | None:
    """What turns a value loaded through `select_adapters` into its JSON value, or None when
    the loaded value already is it (integers, booleans, text): those columns cost nothing.

    `raw_text` is for SQL_ASCII connections, where psycopg hands text over as bytes.
    """
    if pg_type.kind is Kind.FLOAT:
        return float_value
    if pg_type.kind in _NATIVE_LOADER_KINDS:
        return None
    if raw_text:
        convert = text_converter(pg_type)
        if convert is str:
            return decode_text
        return lambda raw: convert(decode_text(raw))
    if pg_type.kind is Kind.TEXT:
        return None
    return text_converter(pg_type)


@cache
def select_adapters() -> AdaptersMap:
    """psycopg loaders for result rows: C text loading for every type, except integers,
    floats and booleans, whose C loaders already give the JSON value.

    Types psycopg does not know (enums, domains' arrays, extensions) fall back to its text
    loader anyway.
    """
    adapters = AdaptersMap(psycopg.postgres.adapters)
    for oid, pg_type in BUILTIN_TYPES.items():
        if pg_type.kind not in _NATIVE_LOADER_KINDS:
            adapters.register_loader(oid, TextLoader)
    return adapters


# --- rows ---------------------------------------------------------------------------------


_VIEW = cast("Callable[[bytes], memoryview]", memoryview)


def _encode_objects(names: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> list[bytes]:
    """Each row as a JSON object, in right-sized copies of orjson's output.

    orjson allocates each output with a few kilobytes of capacity and shrinks it in place;
    keeping a million of those alive keeps the slack too (measured: ~4 KB a row, 4 GB for a
    million rows). Copying into an exact-size object (`bytes(memoryview(...))`) while the
    original is dropped keeps memory at the size of the JSON text. The whole chain runs as
    C iteration: no Python code per row.
    """
    objects = map(dict, map(zip, repeat(names), rows))
    return list(map(bytes, map(_VIEW, map(orjson.dumps, objects))))


class RowEncoder:
    """Encodes the rows of one result set; the per-column work is decided once, here.

    Each row becomes a compact JSON object keyed by column name in column order; duplicate
    names follow dict semantics (the last value wins, at the first name's position).
    """

    def __init__(
        self,
        names: Sequence[str],
        types: Sequence[PgType],
        *,
        raw_text: bool = False,
    ) -> None:
        if len(names) != len(types):
            raise ValueError("one type per column")
        self.names = tuple(names)
        self.types = tuple(types)
        self._fixers: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (index, fixer)
            for index, pg_type in enumerate(types)
            if (fixer := loaded_value_fixer(pg_type, raw_text=raw_text)) is not None
        )

    @property
    def columns(self) -> list[dict[str, str]]:
        """`columns` metadata: every column in order, duplicates kept."""
        return [
            {"name": name, "type": pg_type.name}
            for name, pg_type in zip(self.names, self.types, strict=True)
        ]

    def encode(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Encode loaded rows (tuples from `select_adapters` loaders) to JSON objects."""
        if not rows:
            return []
        if self._fixers:
            # Column-wise: Python code runs only for the values of columns that need it.
            columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
            for index, fix in self._fixers:
                columns[index] = [None if v is None else fix(v) for v in columns[index]]
            rows = list(zip(*columns, strict=True))
        return _encode_objects(self.names, rows)

    def encode_text_row(self, values: Sequence[str | None]) -> bytes:
        """Encode one row given as server text (tests and slow paths)."""
        converters = [text_converter(pg_type) for pg_type in self.types]
        row = {
            name: None if value is None else convert(value)
            for name, value, convert in zip(self.names, values, converters, strict=True)
        }
        return orjson.dumps(row)
