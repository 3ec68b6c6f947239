"""Result limits: exact row truncation and the byte cap."""

from __future__ import annotations

import json

import pytest

from domain.agent.result_limits import ResultLimits, RowCollector


def test_claim_max_rows_lowers_the_agent_cap() -> None:
    assert ResultLimits.for_claim(50, 10_000, 1024) == ResultLimits(max_rows=50, max_bytes=1024)


def test_claim_max_rows_never_raises_the_agent_cap() -> None:
    assert ResultLimits.for_claim(50_000, 10_000, 1024).max_rows == 10_000


def test_no_claim_max_rows_means_the_agent_cap() -> None:
    assert ResultLimits.for_claim(None, 10_000, 1024).max_rows == 10_000


def _row(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def test_exactly_max_rows_rows_are_not_truncated() -> None:
    collector = RowCollector(ResultLimits(max_rows=3, max_bytes=10_000))
    assert all(collector.offer(_row(n)) for n in range(3))
    assert not collector.truncated
    assert collector.truncation_reason is None
    assert json.loads(collector.rows_json()) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_one_row_over_max_rows_is_truncated_with_the_row_limit_reason() -> None:
    collector = RowCollector(ResultLimits(max_rows=3, max_bytes=10_000))
    offered = [collector.offer(_row(n)) for n in range(4)]
    assert offered == [True, True, True, False]
    assert collector.truncated
    assert collector.truncation_reason == "row limit reached (3)"
    assert len(collector.rows) == 3


def test_byte_cap_refuses_the_row_that_would_cross_it() -> None:
    row = b'{"v":"xxxx"}'  # 12 bytes; two rows and a comma take 25
    collector = RowCollector(ResultLimits(max_rows=100, max_bytes=30))
    assert collector.offer(row)
    assert collector.offer(row)
    assert not collector.offer(row)
    assert collector.truncation_reason == "size limit reached (30 bytes)"
    assert len(collector.rows) == 2


def test_byte_cap_counts_the_reserved_envelope() -> None:
    collector = RowCollector(ResultLimits(max_rows=100, max_bytes=30), reserved_bytes=20)
    assert not collector.offer(b'{"v":"xxxx"}')
    assert collector.truncated


@pytest.mark.parametrize("row_bytes", [8, 9, 10])
def test_collected_rows_json_never_exceeds_max_bytes(row_bytes: int) -> None:
    limits = ResultLimits(max_rows=100, max_bytes=10)
    collector = RowCollector(limits)
    row = b'"' + b"x" * (row_bytes - 2) + b'"'
    while collector.offer(row):
        pass
    assert len(collector.rows_json()) <= limits.max_bytes
