"""The one `result_data` envelope both engines write, and the bytes it reserves."""

from __future__ import annotations

import json

import orjson
import pytest

from adapters.mysql.values import encode_row, encode_text
from adapters.postgres.values import BUILTIN_TYPES, RowEncoder
from adapters.sql_common.envelope import (
    dml_output,
    encode_columns,
    reserved_bytes,
    result_data,
    select_output,
)
from domain.agent.result_limits import (
    ResultLimits,
    RowCollector,
    row_limit_reason,
    size_limit_reason,
)
from domain.shared.jobs import ExecutionOutput

INT4 = BUILTIN_TYPES[23]
TEXT = BUILTIN_TYPES[25]

# --- the shape -------------------------------------------------------------------------


def test_key_order_and_compact_json() -> None:
    columns = encode_columns([{"name": "a", "type": "LONG"}, {"name": "a", "type": "LONG"}])
    data = result_data([b'{"a":1}', b'{"a":2}'], "row limit reached (2)", columns)
    assert data == (
        '{"rows":[{"a":1},{"a":2}],"truncated":true,"truncation_reason":"row limit reached (2)",'
        '"columns":[{"name":"a","type":"LONG"},{"name":"a","type":"LONG"}]}'
    )
    assert list(orjson.loads(data)) == ["rows", "truncated", "truncation_reason", "columns"]


def test_no_rows_and_no_columns() -> None:
    assert result_data([], None, encode_columns([])) == (
        '{"rows":[],"truncated":false,"truncation_reason":null,"columns":[]}'
    )


def test_non_ascii_is_kept_raw() -> None:
    columns = encode_columns([{"name": "é", "type": "text"}])
    data = result_data([orjson.dumps({"é": "ß"})], "size limit reached (1 MB)", columns)
    assert data == (
        '{"rows":[{"é":"ß"}],"truncated":true,"truncation_reason":"size limit reached (1 MB)",'
        '"columns":[{"name":"é","type":"text"}]}'
    )


def test_the_rows_are_consumed() -> None:
    rows = [b'{"a":1}']
    result_data(rows, None, b"[]")
    assert rows == []


def test_select_output_with_and_without_rows() -> None:
    assert select_output(None, b"[]") == ExecutionOutput(
        result_data='{"rows":[],"truncated":false,"truncation_reason":null,"columns":[]}',
        truncated=False,
    )
    collector = RowCollector(ResultLimits(max_rows=1, max_bytes=1000))
    assert collector.offer(b'{"n":1}') and not collector.offer(b'{"n":2}')
    columns = encode_columns([{"name": "n", "type": "int4"}])
    assert select_output(collector, columns) == ExecutionOutput(
        result_data='{"rows":[{"n":1}],"truncated":true,'
        '"truncation_reason":"row limit reached (1)","columns":[{"name":"n","type":"int4"}]}',
        truncated=True,
    )


def test_dml_output_without_returned_rows_is_dbward_0_2_s_shape() -> None:
    assert dml_output(3) == ExecutionOutput(result_data='{"rows_affected":3}', rows_affected=3)


def test_dml_output_with_returned_rows_puts_the_select_envelope_behind_the_count() -> None:
    collector = RowCollector(ResultLimits(max_rows=1, max_bytes=1000))
    assert collector.offer(b'{"id":7}') and not collector.offer(b'{"id":8}')
    columns = encode_columns([{"name": "id", "type": "int4"}])
    output = dml_output(2, collector, columns)
    assert output == ExecutionOutput(
        result_data='{"rows_affected":2,"rows":[{"id":7}],"truncated":true,'
        '"truncation_reason":"row limit reached (1)","columns":[{"name":"id","type":"int4"}]}',
        rows_affected=2,
        truncated=True,
    )
    assert list(orjson.loads(output.result_data)) == [
        "rows_affected",
        "rows",
        "truncated",
        "truncation_reason",
        "columns",
    ]


def test_dml_output_keeps_an_empty_returning_result() -> None:
    collector = RowCollector(ResultLimits(max_rows=10, max_bytes=1000))
    assert dml_output(0, collector, b"[]") == ExecutionOutput(
        result_data='{"rows_affected":0,"rows":[],"truncated":false,'
        '"truncation_reason":null,"columns":[]}',
        rows_affected=0,
        truncated=False,
    )


def test_a_collector_that_refused_a_row_refuses_every_later_one() -> None:
    # A size refusal must not let a later, smaller row in: the rows stay a prefix.
    collector = RowCollector(ResultLimits(max_rows=100, max_bytes=30))
    assert collector.offer(b'{"v":"a"}')
    assert not collector.offer(b'{"v":"' + b"x" * 40 + b'"}')
    assert not collector.offer(b'{"v":"b"}')
    assert collector.rows == [b'{"v":"a"}']
    assert collector.truncation_reason == size_limit_reason(30)


def test_postgres_columns_encode_in_order_with_duplicates_kept() -> None:
    encoder = RowEncoder(["id", "name", "id"], [INT4, TEXT, INT4])
    assert encode_columns(encoder.columns) == (
        b'[{"name":"id","type":"int4"},{"name":"name","type":"text"},{"name":"id","type":"int4"}]'
    )


# --- the reserve -------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [4096, 10 * 1024 * 1024])
@pytest.mark.parametrize("max_rows", [10, 10**15])
@pytest.mark.parametrize("reason", [None, "row", "size"])
def test_the_reserve_bounds_every_envelope_exactly(
    reason: str | None, max_rows: int, max_bytes: int
) -> None:
    limits = ResultLimits(max_rows=max_rows, max_bytes=max_bytes)
    columns = encode_columns(
        [{"name": "id", "type": "LONG"}, {"name": "name", "type": "VAR_STRING"}]
    )
    reasons = {None: None, "row": row_limit_reason(max_rows), "size": size_limit_reason(max_bytes)}
    envelope = result_data([], reasons[reason], columns).encode()
    # The collector keeps two bytes for the array's brackets on top of the reserve.
    assert len(envelope) <= reserved_bytes(limits, columns) + len(b"[]")
    longest = max(len(result_data([], text, columns).encode()) for text in reasons.values())
    assert longest == reserved_bytes(limits, columns) + len(b"[]")


@pytest.mark.parametrize("max_bytes", [300, 301, 333, 400, 1000])
def test_rows_collected_with_the_reserve_use_the_cap_and_never_exceed_it(max_bytes: int) -> None:
    limits = ResultLimits(max_rows=1000, max_bytes=max_bytes)
    columns = encode_columns([{"name": "n", "type": "int4"}])
    collector = RowCollector(limits, reserved_bytes=reserved_bytes(limits, columns))
    rows = (orjson.dumps({"n": n}) for n in range(1000))
    refused = next(row for row in rows if not collector.offer(row))
    data = result_data(collector.rows, collector.truncation_reason, columns).encode()
    assert json.loads(data)["truncation_reason"] == f"size limit reached ({max_bytes} bytes)"
    assert len(data) <= max_bytes
    # The refused row would not have fitted: the cap is used, not just respected.
    assert len(data) + len(b",") + len(refused) > max_bytes


def test_mysql_rows_collected_with_the_reserve_stay_within_the_cap() -> None:
    limits = ResultLimits(max_rows=1000, max_bytes=300)
    columns = encode_columns([{"name": "v", "type": "VAR_STRING"}])
    collector = RowCollector(limits, reserved_bytes=reserved_bytes(limits, columns))
    row = encode_row(["v"], [encode_text], (b"x" * 20,))
    while collector.offer(row):
        pass
    data = result_data(collector.rows, collector.truncation_reason, columns).encode()
    assert json.loads(data)["truncation_reason"] == "size limit reached (300 bytes)"
    assert len(data) <= 300
    assert len(data) + 1 + len(row) > 300


@pytest.mark.parametrize(
    ("max_bytes", "reason"),
    [
        (1024 * 1024, "size limit reached (1 MB)"),
        (3 * 1024 * 1024, "size limit reached (3 MB)"),
        (1024 * 1024 + 1, "size limit reached (1048577 bytes)"),
        (1_000_000, "size limit reached (1000000 bytes)"),
    ],
)
def test_a_whole_mib_cap_is_reported_in_mb_and_the_envelope_still_fits(
    max_bytes: int, reason: str
) -> None:
    # A row limit whose reason is the longer one: the reserve covers whichever is written.
    limits = ResultLimits(max_rows=10**15, max_bytes=max_bytes)
    columns = encode_columns([{"name": "pad", "type": "text"}])
    collector = RowCollector(limits, reserved_bytes=reserved_bytes(limits, columns))
    row = orjson.dumps({"pad": "x" * 2000})
    while collector.offer(row):
        pass
    data = result_data(collector.rows, collector.truncation_reason, columns)
    assert len(data.encode()) <= max_bytes
    assert json.loads(data)["truncation_reason"] == reason


@pytest.mark.parametrize("max_bytes", [300, 333, 1000])
@pytest.mark.parametrize("rows_affected", [0, 7, 2**64 - 1])
def test_a_dml_envelope_collected_with_its_reserve_never_exceeds_the_cap(
    max_bytes: int, rows_affected: int
) -> None:
    # The count is known only when the batch ends: the reserve holds the widest one.
    limits = ResultLimits(max_rows=1000, max_bytes=max_bytes)
    columns = encode_columns([{"name": "n", "type": "int4"}])
    collector = RowCollector(limits, reserved_bytes=reserved_bytes(limits, columns, dml=True))
    for n in range(1000):
        if not collector.offer(orjson.dumps({"n": n})):
            break
    data = dml_output(rows_affected, collector, columns).result_data.encode()
    assert len(data) <= max_bytes
    assert json.loads(data)["truncation_reason"] == f"size limit reached ({max_bytes} bytes)"
    assert json.loads(data)["rows_affected"] == rows_affected


def test_the_dml_reserve_is_the_select_reserve_plus_the_widest_count() -> None:
    limits = ResultLimits(max_rows=10, max_bytes=4096)
    columns = encode_columns([{"name": "n", "type": "int4"}])
    widest = len(b'"rows_affected":18446744073709551615,')
    assert reserved_bytes(limits, columns, dml=True) == reserved_bytes(limits, columns) + widest
