"""MySQL value encoding (docs/protocol.md §5.5), without a server."""

from __future__ import annotations

import orjson
import pytest
from pymysql.constants import FIELD_TYPE

from adapters.mysql.values import (
    BINARY_CHARSET,
    encode_binary,
    encode_boolean,
    encode_float,
    encode_integer,
    encode_json,
    encode_row,
    encode_text,
    encoder_for,
    type_name,
)
from domain.agent.result_limits import (
    row_limit_reason,
    size_limit_reason,
)

UTF8MB4 = 45


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"0", 0),
        (b"-128", -128),
        (b"9223372036854775807", 9223372036854775807),
        (b"-9223372036854775808", -9223372036854775808),
        # BIGINT UNSIGNED beyond i64: the exact digits as a string, never a rounded number.
        (b"9223372036854775808", "9223372036854775808"),
        (b"18446744073709551615", "18446744073709551615"),
        (b"0007", 7),  # ZEROFILL
    ],
)
def test_integers_are_numbers_within_i64_and_exact_text_beyond(
    raw: bytes, expected: object
) -> None:
    assert encode_integer(raw) == expected
    assert type(encode_integer(raw)) is type(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1.5", 1.5),
        (b"-0.1", -0.1),
        (b"1e300", 1e300),
        (b"nan", "nan"),
        (b"inf", "inf"),
        (b"-inf", "-inf"),
    ],
)
def test_floats_are_numbers_but_nan_and_infinity_stay_text(raw: bytes, expected: object) -> None:
    assert encode_float(raw) == expected
    assert type(encode_float(raw)) is type(expected)


def test_boolean_is_true_false_and_other_tinyint1_values_stay_integers() -> None:
    assert encode_boolean(b"1") is True
    assert encode_boolean(b"0") is False
    assert encode_boolean(b"2") == 2
    assert encode_boolean(b"-1") == -1


def test_json_is_parsed_and_unparseable_json_stays_text() -> None:
    assert encode_json(b'{"a": [1, 2.5, "x"], "b": null}') == {"a": [1, 2.5, "x"], "b": None}
    assert encode_json(b"[1,") == "[1,"
    # MySQL JSON holds integers up to u64 (larger ones are stored as doubles): all exact here.
    assert encode_json(b"[18446744073709551615]") == [18446744073709551615]


def test_binary_is_backslash_x_lowercase_hex() -> None:
    assert encode_binary(b"\x00\xff\xab") == "\\x00ffab"
    assert encode_binary(b"") == "\\x"
    # In JSON the backslash is escaped: "\\x00ff".
    assert orjson.dumps(encode_binary(b"\x00\xff")) == b'"\\\\x00ff"'


def test_text_is_utf8_and_invalid_utf8_becomes_hex() -> None:
    assert encode_text("héllo 日本 😀".encode()) == "héllo 日本 😀"
    assert encode_text(b"\xc3\x28") == "\\xc328"


@pytest.mark.parametrize(
    ("type_code", "charset", "length", "raw", "expected"),
    [
        (FIELD_TYPE.TINY, BINARY_CHARSET, 4, b"-5", -5),
        (FIELD_TYPE.TINY, BINARY_CHARSET, 1, b"1", True),  # TINYINT(1) = BOOLEAN
        (FIELD_TYPE.SHORT, BINARY_CHARSET, 6, b"300", 300),
        (FIELD_TYPE.INT24, BINARY_CHARSET, 9, b"70000", 70000),
        (FIELD_TYPE.LONG, BINARY_CHARSET, 11, b"-2147483648", -2147483648),
        (FIELD_TYPE.LONGLONG, BINARY_CHARSET, 20, b"18446744073709551615", "18446744073709551615"),
        (FIELD_TYPE.FLOAT, BINARY_CHARSET, 12, b"1.25", 1.25),
        (FIELD_TYPE.DOUBLE, BINARY_CHARSET, 22, b"0.1", 0.1),
        (
            FIELD_TYPE.NEWDECIMAL,
            BINARY_CHARSET,
            32,
            b"12345678901234567890.0123456789",
            "12345678901234567890.0123456789",
        ),
        (FIELD_TYPE.DATE, BINARY_CHARSET, 10, b"2024-01-02", "2024-01-02"),
        (
            FIELD_TYPE.DATETIME,
            BINARY_CHARSET,
            26,
            b"2024-01-02 03:04:05.123456",
            "2024-01-02 03:04:05.123456",
        ),
        (FIELD_TYPE.TIMESTAMP, BINARY_CHARSET, 19, b"2024-01-02 03:04:05", "2024-01-02 03:04:05"),
        (FIELD_TYPE.TIME, BINARY_CHARSET, 10, b"-838:59:59", "-838:59:59"),
        (FIELD_TYPE.YEAR, BINARY_CHARSET, 4, b"2024", "2024"),
        (FIELD_TYPE.VAR_STRING, UTF8MB4, 40, "日本".encode(), "日本"),
        (FIELD_TYPE.STRING, UTF8MB4, 4, b"a,b", "a,b"),  # ENUM and SET arrive as STRING
        (FIELD_TYPE.BLOB, UTF8MB4, 65535, b"long text", "long text"),  # TEXT
        (FIELD_TYPE.BLOB, BINARY_CHARSET, 65535, b"\x00\x80", "\\x0080"),  # BLOB
        (FIELD_TYPE.VAR_STRING, BINARY_CHARSET, 4, b"\xc3\x28", "\\xc328"),  # VARBINARY
        (FIELD_TYPE.STRING, BINARY_CHARSET, 4, b"\x01\x00\x00\x00", "\\x01000000"),  # BINARY(4)
        (FIELD_TYPE.BIT, BINARY_CHARSET, 8, b"\xa5", "\\xa5"),
        (FIELD_TYPE.JSON, BINARY_CHARSET, 4294967295, b'{"k": 1}', {"k": 1}),
        (FIELD_TYPE.GEOMETRY, BINARY_CHARSET, 4294967295, b"\x00\x01", "\\x0001"),
    ],
)
def test_encoder_for_each_wire_type(
    type_code: int, charset: int, length: int, raw: bytes, expected: object
) -> None:
    value = encoder_for(type_code, charset, length)(raw)
    assert value == expected
    assert type(value) is type(expected)


def test_type_names_are_mysql_c_api_names() -> None:
    assert type_name(FIELD_TYPE.LONG) == "LONG"
    assert type_name(FIELD_TYPE.VAR_STRING) == "VAR_STRING"
    assert type_name(FIELD_TYPE.NEWDECIMAL) == "NEWDECIMAL"
    assert type_name(FIELD_TYPE.JSON) == "JSON"
    assert type_name(FIELD_TYPE.TINY) == "TINY"  # not the alias CHAR
    assert type_name(FIELD_TYPE.ENUM) == "ENUM"  # not the alias INTERVAL
    assert type_name(199) == "TYPE_199"


def test_row_is_a_json_object_in_column_order_and_duplicates_keep_the_last_value() -> None:
    names = ["b", "a", "b", "n"]
    encoders = [encode_integer, encode_text, encode_integer, encode_text]
    assert encode_row(names, encoders, (b"1", b"x", b"2", None)) == b'{"b":2,"a":"x","n":null}'


@pytest.mark.parametrize(
    ("max_bytes", "text"),
    [
        (10 * 1024 * 1024, "size limit reached (10 MB)"),  # dbward 0.2's wording (§5.6)
        (1024 * 1024, "size limit reached (1 MB)"),
        (10 * 1024 * 1024 + 1, "size limit reached (10485761 bytes)"),
        (10_000_000, "size limit reached (10000000 bytes)"),
        (4096, "size limit reached (4096 bytes)"),
        (0, "size limit reached (0 bytes)"),
    ],
)
def test_size_limit_reason_reads_in_mb_for_whole_mebibytes(max_bytes: int, text: str) -> None:
    assert size_limit_reason(max_bytes) == text


def test_row_limit_reason_keeps_its_wording() -> None:
    assert row_limit_reason(10000) == "row limit reached (10000)"
