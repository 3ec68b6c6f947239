"""PostgreSQL value encoding (docs/protocol.md §5.5), without a database."""

from __future__ import annotations

import math

import orjson
import pytest
from psycopg.pq import Format

from adapters.postgres.values import (
    BUILTIN_TYPES,
    CatalogType,
    Kind,
    PgType,
    RowEncoder,
    bool_from_text,
    catalog_dependencies,
    decode_text,
    float_from_text,
    float_value,
    int_from_text,
    json_from_text,
    loaded_value_fixer,
    parse_array,
    resolve_catalog_types,
    select_adapters,
    text_converter,
)

INT4 = BUILTIN_TYPES[23]
TEXT = BUILTIN_TYPES[25]
FLOAT8 = BUILTIN_TYPES[701]
BOOL = BUILTIN_TYPES[16]
JSONB = BUILTIN_TYPES[3802]
NUMERIC = BUILTIN_TYPES[1700]
INT4_ARRAY = BUILTIN_TYPES[1007]
TEXT_ARRAY = BUILTIN_TYPES[1009]


# --- scalars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-9223372036854775808", -9223372036854775808),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", "9223372036854775808"),  # not an i64: sent as text
        ("1 2", "1 2"),  # int2vector-like text is not an integer
    ],
)
def test_integers_parse_as_i64_or_stay_text(text: str, expected: int | str) -> None:
    assert int_from_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5", 1.5),
        ("-0.1", -0.1),
        ("1e+300", 1e300),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("nonsense", "nonsense"),
    ],
)
def test_floats_are_numbers_except_nan_and_infinities(text: str, expected: float | str) -> None:
    assert float_from_text(text) == expected


def test_float_values_loaded_by_psycopg_get_the_same_rule() -> None:
    assert float_value(2.25) == 2.25
    assert float_value(math.nan) == "NaN"
    assert float_value(math.inf) == "Infinity"
    assert float_value(-math.inf) == "-Infinity"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("t", True), ("true", True), ("1", True), ("f", False), ("false", False), ("x", False)],
)
def test_booleans(text: str, expected: bool) -> None:
    assert bool_from_text(text) is expected


def test_json_is_parsed_and_falls_back_to_its_text() -> None:
    assert json_from_text('{"a": [1, null, "x"]}') == {"a": [1, None, "x"]}
    assert json_from_text("[1, 2") == "[1, 2"
    # Beyond 64 bits integers become doubles, as JSON parsers (and dbward 0.2) do.
    assert json_from_text('{"n": 123456789012345678901234567890}') == {"n": 1.2345678901234568e29}
    # A lone surrogate (accepted by PostgreSQL's json type) cannot be re-encoded: text.
    assert json_from_text('"\\ud800"') == '"\\ud800"'
    assert json_from_text("NaN") == "NaN"


def test_text_that_is_not_utf8_becomes_hex() -> None:
    assert decode_text("grüße".encode()) == "grüße"
    assert decode_text(b"\xffA") == "\\xff41"


# --- arrays ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{1,2,3}", [1, 2, 3]),
        ("{1,NULL,3}", [1, None, 3]),
        ("{null}", [None]),
        ("{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        ("{{{1}},{{2}}}", [[[1]], [[2]]]),
        ("{ 1 , 2 }", [1, 2]),
        ("{{{{{{1}}}}}}", [[[[[[1]]]]]]),  # six dimensions: PostgreSQL's maximum
    ],
)
def test_integer_arrays(text: str, expected: list[object]) -> None:
    assert parse_array(text, int_from_text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"NULL",NULL}', ["NULL", None]),  # quoted NULL is a string, bare NULL is null
        ('{"a,b","c d",""}', ["a,b", "c d", ""]),
        ('{"say \\"hi\\"","back\\\\slash"}', ['say "hi"', "back\\slash"]),
        ('{{"x",NULL},{"{}","}"}}', [["x", None], ["{}", "}"]]),
        ("{plain,words}", ["plain", "words"]),
        ('{"ünï","日本"}', ["ünï", "日本"]),
    ],
)
def test_text_arrays(text: str, expected: list[object]) -> None:
    assert parse_array(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[0:1]={7,8}",  # explicit bounds
        "[1:1][2:3]={{1,2}}",
        "{{{{{{{1}}}}}}}",  # seven dimensions
        "{1,}",
        "{,1}",
        "{1",
        "{1}}",
        "{1}x",
        "{{1},2}",  # sub-array and scalar at one level
        "{1,{2}}",
        '{"unterminated}',
        '{"a"b}',
        "{a}{b}",
        "not an array",
        "",
    ],
)
def test_explicit_bounds_deep_or_malformed_arrays_stay_text(text: str) -> None:
    assert parse_array(text, int_from_text) == text


def test_array_elements_use_their_types_rule() -> None:
    assert parse_array("{NaN,1.5,-Infinity}", float_from_text) == ["NaN", 1.5, "-Infinity"]
    assert parse_array("{t,f,NULL}", bool_from_text) == [True, False, None]
    assert parse_array('{"{\\"a\\": 1}","[2]"}', json_from_text) == [{"a": 1}, [2]]
    assert parse_array("{1,x}", int_from_text) == [1, "x"]


def test_box_arrays_use_the_semicolon_delimiter() -> None:
    assert parse_array("{(1,1),(0,0);(3,3),(2,2)}", delimiter=";") == [
        "(1,1),(0,0)",
        "(3,3),(2,2)",
    ]
    assert BUILTIN_TYPES[1020].delimiter == ";"


def test_text_converter_for_an_array_type_applies_the_element_rule() -> None:
    assert text_converter(INT4_ARRAY)("{1,NULL}") == [1, None]
    assert text_converter(BUILTIN_TYPES[1022])("{NaN}") == ["NaN"]  # float8[]
    assert text_converter(NUMERIC)("1.50") == "1.50"


# --- types -----------------------------------------------------------------------------


def test_builtin_types_are_named_as_postgresql_names_them() -> None:
    assert (INT4.name, INT4.kind) == ("int4", Kind.INT)
    assert (INT4_ARRAY.name, INT4_ARRAY.kind, INT4_ARRAY.element) == ("_int4", Kind.ARRAY, Kind.INT)
    assert BUILTIN_TYPES[1184].name == "timestamptz"
    assert BUILTIN_TYPES[1184].kind is Kind.TEXT
    assert BUILTIN_TYPES[26].kind is Kind.TEXT  # oid is sent as text (§5.5)
    assert JSONB.kind is Kind.JSON
    assert BUILTIN_TYPES[700].kind is Kind.FLOAT


def test_user_types_resolve_domains_to_their_base_and_arrays_to_their_element() -> None:
    catalog = {
        9001: CatalogType(9001, "mood", "e", 0, 0, "E", ","),
        9002: CatalogType(9002, "_mood", "b", 0, 9001, "A", ","),
        9003: CatalogType(9003, "positive_int", "d", 23, 0, "N", ","),
        9004: CatalogType(9004, "_positive_int", "b", 0, 9003, "A", ","),
        9005: CatalogType(9005, "int_list", "d", 1007, 0, "A", ","),
        9006: CatalogType(9006, "money_like", "d", 9003, 0, "N", ","),
    }
    resolved = resolve_catalog_types([9001, 9002, 9003, 9004, 9005, 9006, 9999, 23], catalog)
    assert resolved[9001] == PgType(9001, "mood", Kind.TEXT)
    assert resolved[9002] == PgType(9002, "_mood", Kind.ARRAY, Kind.TEXT, ",")
    assert resolved[9003] == PgType(9003, "positive_int", Kind.INT)
    assert resolved[9004] == PgType(9004, "_positive_int", Kind.ARRAY, Kind.INT, ",")
    assert resolved[9005] == PgType(9005, "int_list", Kind.ARRAY, Kind.INT, ",")
    assert resolved[9006].kind is Kind.INT  # a domain over a domain
    assert resolved[9999] == PgType(9999, "unknown", Kind.TEXT)
    assert resolved[23] is INT4


def test_catalog_dependencies_are_what_still_needs_fetching() -> None:
    rows = [
        CatalogType(9004, "_positive_int", "b", 0, 9003, "A", ","),
        CatalogType(9003, "positive_int", "d", 23, 0, "N", ","),
    ]
    assert catalog_dependencies(rows) == {9003}  # 23 is built in


def test_psycopg_loads_text_except_for_integers_floats_and_booleans() -> None:
    adapters = select_adapters()
    text_loader = adapters.get_loader(25, Format.TEXT)
    for oid in (1700, 1184, 17, 114, 3802, 1007, 2950):  # numeric, timestamptz, bytea, json…
        assert adapters.get_loader(oid, Format.TEXT) is text_loader
    for oid in (20, 21, 23, 700, 701, 16):
        assert adapters.get_loader(oid, Format.TEXT) is not text_loader


def test_only_columns_that_need_python_get_a_fixer() -> None:
    assert loaded_value_fixer(INT4) is None
    assert loaded_value_fixer(BOOL) is None
    assert loaded_value_fixer(TEXT) is None
    assert loaded_value_fixer(NUMERIC) is None
    assert loaded_value_fixer(FLOAT8) is float_value
    assert loaded_value_fixer(JSONB) is not None
    assert loaded_value_fixer(TEXT, raw_text=True) is decode_text


# --- rows ------------------------------------------------------------------------------


def test_rows_are_json_objects_in_column_order() -> None:
    encoder = RowEncoder(
        ["id", "score", "doc", "tags", "note", "ok"],
        [INT4, FLOAT8, JSONB, TEXT_ARRAY, TEXT, BOOL],
    )
    encoded = encoder.encode(
        [
            (1, 0.5, '{"k": 1}', '{a,"NULL",NULL}', "x", True),
            (2, math.nan, None, None, None, None),
        ]
    )
    assert encoded == [
        b'{"id":1,"score":0.5,"doc":{"k":1},"tags":["a","NULL",null],"note":"x","ok":true}',
        b'{"id":2,"score":"NaN","doc":null,"tags":null,"note":null,"ok":null}',
    ]
    assert encoder.columns == [
        {"name": "id", "type": "int4"},
        {"name": "score", "type": "float8"},
        {"name": "doc", "type": "jsonb"},
        {"name": "tags", "type": "_text"},
        {"name": "note", "type": "text"},
        {"name": "ok", "type": "bool"},
    ]
    assert encoder.encode([]) == []


def test_duplicate_column_names_keep_the_first_position_and_the_last_value() -> None:
    encoder = RowEncoder(["a", "b", "a"], [INT4, TEXT, INT4])
    assert encoder.encode([(1, "x", 3)]) == [b'{"a":3,"b":"x"}']
    assert [c["name"] for c in encoder.columns] == ["a", "b", "a"]


def test_sql_ascii_text_arrives_as_bytes_and_is_decoded_per_value() -> None:
    encoder = RowEncoder(["t", "j", "n"], [TEXT, JSONB, INT4], raw_text=True)
    assert encoder.encode([(b"\xffA", b'{"a":1}', 7)]) == [b'{"t":"\\\\xff41","j":{"a":1},"n":7}']


def test_encoded_rows_do_not_keep_orjson_slack() -> None:
    encoder = RowEncoder(["t"], [TEXT])
    (row,) = encoder.encode([("x",)])
    assert row == orjson.dumps({"t": "x"})
    assert row.__sizeof__() < 100  # an exact-size copy, not a kilobytes-wide buffer


def test_encode_text_row_converts_from_server_text() -> None:
    encoder = RowEncoder(["n", "f", "b"], [INT4, FLOAT8, BOOL])
    assert encoder.encode_text_row(["5", "Infinity", "t"]) == b'{"n":5,"f":"Infinity","b":true}'


def test_one_type_per_column() -> None:
    with pytest.raises(ValueError, match="one type per column"):
        RowEncoder(["a"], [])
