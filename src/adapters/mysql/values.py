"""MySQL/MariaDB values as JSON (docs/protocol.md §5.5).

Rows are read in the text protocol with PyMySQL's conversions switched off, so every value
arrives as the exact bytes the server sent. Encoding from those bytes (rather than from
Python objects PyMySQL would build) keeps DECIMAL precision, date and time text exactly
as the server wrote it, and lets invalid UTF-8 become hex instead of an exception halfway
through a stream. Everything here is a pure function, so it is unit-tested without a server.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pymysql.constants import FIELD_TYPE

#: Turns the raw text of one non-NULL value into its JSON value.
Encoder = Callable[[bytes], Any]

#: MySQL's charset number for `binary`: BLOB, BINARY, VARBINARY, BIT and GEOMETRY carry it.
BINARY_CHARSET = 63

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1

#: Wire type codes to the names MySQL's own C API uses (`MYSQL_TYPE_<name>`); written out
#: rather than read from `FIELD_TYPE` because that module also holds aliases (CHAR, INTERVAL).
TYPE_NAMES: dict[int, str] = {
    FIELD_TYPE.DECIMAL: "DECIMAL",
    FIELD_TYPE.TINY: "TINY",
    FIELD_TYPE.SHORT: "SHORT",
    FIELD_TYPE.LONG: "LONG",
    FIELD_TYPE.FLOAT: "FLOAT",
    FIELD_TYPE.DOUBLE: "DOUBLE",
    FIELD_TYPE.NULL: "NULL",
    FIELD_TYPE.TIMESTAMP: "TIMESTAMP",
    FIELD_TYPE.LONGLONG: "LONGLONG",
    FIELD_TYPE.INT24: "INT24",
    FIELD_TYPE.DATE: "DATE",
    FIELD_TYPE.TIME: "TIME",
    FIELD_TYPE.DATETIME: "DATETIME",
    FIELD_TYPE.YEAR: "YEAR",
    FIELD_TYPE.NEWDATE: "NEWDATE",
    FIELD_TYPE.VARCHAR: "VARCHAR",
    FIELD_TYPE.BIT: "BIT",
    FIELD_TYPE.JSON: "JSON",
    FIELD_TYPE.NEWDECIMAL: "NEWDECIMAL",
    FIELD_TYPE.ENUM: "ENUM",
    FIELD_TYPE.SET: "SET",
    FIELD_TYPE.TINY_BLOB: "TINY_BLOB",
    FIELD_TYPE.MEDIUM_BLOB: "MEDIUM_BLOB",
    FIELD_TYPE.LONG_BLOB: "LONG_BLOB",
    FIELD_TYPE.BLOB: "BLOB",
    FIELD_TYPE.VAR_STRING: "VAR_STRING",
    FIELD_TYPE.STRING: "STRING",
    FIELD_TYPE.GEOMETRY: "GEOMETRY",
}

_INTEGER_TYPES = frozenset(
    {FIELD_TYPE.TINY, FIELD_TYPE.SHORT, FIELD_TYPE.INT24, FIELD_TYPE.LONG, FIELD_TYPE.LONGLONG}
)
_FLOAT_TYPES = frozenset({FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE})
#: Types whose text is ASCII by construction and is sent as is (precision and format kept).
_EXACT_TEXT_TYPES = frozenset(
    {
        FIELD_TYPE.DECIMAL,
        FIELD_TYPE.NEWDECIMAL,
        FIELD_TYPE.DATE,
        FIELD_TYPE.NEWDATE,
        FIELD_TYPE.TIME,
        FIELD_TYPE.DATETIME,
        FIELD_TYPE.TIMESTAMP,
        FIELD_TYPE.YEAR,
        FIELD_TYPE.NULL,
    }
)


def type_name(type_code: int) -> str:
    """The column type for the `columns` list; unknown codes stay visible as numbers."""
    return TYPE_NAMES.get(type_code, f"TYPE_{type_code}")


def encode_binary(raw: bytes) -> str:
    """Bytes as `\\x` + lowercase hex, the same shape PostgreSQL's bytea hex output has."""
    return "\\x" + raw.hex()


def encode_text(raw: bytes) -> str:
    """UTF-8 text; bytes that are not valid UTF-8 fall back to hex rather than failing the job."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return encode_binary(raw)


def encode_integer(raw: bytes) -> int | str:
    """An integer when it fits in i64 (what JSON consumers can hold), else its exact text.

    BIGINT UNSIGNED above 2^63-1 would lose precision in JavaScript and i64 decoders alike.
    """
    try:
        value = int(raw)
    except ValueError:
        return encode_text(raw)
    if _I64_MIN <= value <= _I64_MAX:
        return value
    return raw.decode("ascii")


def encode_float(raw: bytes) -> float | str:
    """A JSON number; NaN and infinities are not JSON numbers, so they keep their text."""
    try:
        value = float(raw)
    except ValueError:
        return encode_text(raw)
    if math.isfinite(value):
        return value
    return raw.decode("ascii")


def encode_boolean(raw: bytes) -> bool | int | str:
    """TINYINT(1) (MySQL's BOOLEAN): 0/1 become false/true.

    Any other value is kept as its integer: TINYINT(1) is only a display width, and the
    reference's "false unless 1" would silently turn a stored 2 into false.
    """
    if raw == b"1":
        return True
    if raw == b"0":
        return False
    return encode_integer(raw)


def encode_json(raw: bytes) -> Any:
    """The parsed document; text that does not parse (or numbers orjson cannot hold) stays text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return encode_text(raw)


def encoder_for(type_code: int, charset: int, length: int) -> Encoder:
    """Pick the encoder for a result column from its wire metadata.

    `charset` decides text versus bytes for the string family (a VARBINARY and a VARCHAR
    share type codes); numeric and temporal columns also report charset 63, which means
    nothing for them. `length` is the display width, which tells TINYINT(1) apart.
    """
    if type_code == FIELD_TYPE.TINY and length == 1:
        return encode_boolean
    if type_code in _INTEGER_TYPES:
        return encode_integer
    if type_code in _FLOAT_TYPES:
        return encode_float
    if type_code == FIELD_TYPE.JSON:
        return encode_json
    if type_code == FIELD_TYPE.BIT:
        return encode_binary
    if type_code in _EXACT_TEXT_TYPES:
        return encode_text
    if charset == BINARY_CHARSET:
        return encode_binary
    return encode_text


def encode_row(names: Sequence[str], encoders: Sequence[Encoder], row: Sequence[Any]) -> bytes:
    """One row as a compact JSON object keyed by column name, in column order.

    Duplicate names follow dict semantics: the last value wins, at the first name's place.
    """
    obj: dict[str, Any] = {}
    for name, encode, value in zip(names, encoders, row, strict=True):
        obj[name] = None if value is None else encode(value)
    return orjson.dumps(obj)
