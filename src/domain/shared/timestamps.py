"""The two timestamp formats dbward writes, each for its own reader; both RFC 3339 UTC.

* The stored format (`format_timestamp`): microseconds and `Z`, fixed width. Every stored
  and returned timestamp uses it, so string order is time order on every store engine,
  and an audit event's `created_at` hashes the same everywhere.
* The execution-token format (`rfc3339_nanos`, docs/protocol.md §14): nanoseconds and
  `+00:00`, as dbward 0.2 writes `issued_at`, `expires_at` and a claim's
  `lease_expires_at`. `expires_at` is part of the signed message, so these bytes must stay
  exactly what a dbward 0.2 agent expects; they are wire bytes, not a storage choice, and
  do not replace the stored format.
"""

from __future__ import annotations

from datetime import UTC, datetime

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_timestamp(moment: datetime) -> str:
    """`moment` as stored: UTC, microseconds, `Z`. Naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: timestamps need a timezone")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


#: `len("2026-05-01T12:05:00.123456Z")`: every timestamp `format_timestamp` writes.
_STORED_LENGTH = 27


def parse_timestamp(stored: str) -> datetime:
    """A stored timestamp back as an aware UTC datetime.

    What `format_timestamp` wrote is parsed by `fromisoformat`, many times faster than
    `strptime` (a request row holds four, and the hot paths read rows many times over);
    anything else goes through `strptime`, which refuses what is not of the format.
    """
    if (
        len(stored) == _STORED_LENGTH
        and stored[10] == "T"
        and stored[19] == "."
        and stored[20:26].isdigit()
        and stored[-1] == "Z"
    ):
        return datetime.fromisoformat(stored[:-1]).replace(tzinfo=UTC)
    return datetime.strptime(stored, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def rfc3339_nanos(moment: datetime) -> str:
    """`2026-05-01T12:05:00.123456789+00:00`: chrono's `to_rfc3339` with nanoseconds.

    Python keeps microseconds, so the last three digits are always `000`.
    """
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond:06d}000+00:00"
