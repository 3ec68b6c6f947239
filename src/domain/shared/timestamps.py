"""The server's one timestamp format: RFC 3339 UTC with microseconds and `Z`, fixed width.

Every stored and returned timestamp uses it, so string order is time order on every store
engine, and an audit event's `created_at` hashes the same everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_timestamp(moment: datetime) -> str:
    """`moment` as stored: UTC, microseconds, `Z`. Naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: timestamps need a timezone")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(stored: str) -> datetime:
    """A stored timestamp back as an aware UTC datetime."""
    return datetime.strptime(stored, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
