"""Stored timestamps: what `format_timestamp` writes, `parse_timestamp` reads back exactly,
and text of any other shape is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.shared.timestamps import format_timestamp, parse_timestamp


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 5, 1, 12, 5, 0, 123456, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 5, 0, tzinfo=UTC),
        datetime(2026, 5, 1, 14, 5, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_stored_timestamp_reads_back_as_the_same_utc_moment(moment: datetime) -> None:
    parsed = parse_timestamp(format_timestamp(moment))
    assert parsed == moment
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-01 12:05:00.123456Z",
        "2026-05-01T12:05:00.12345xZ",
        "2026-05-01T12:05:00.123+01Z",
        "2026-05-01T12:05:00Z",
        "2026-05-01",
    ],
)
def test_text_of_another_shape_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)
