"""Exact result limits (docs/agent.md §5 improvement 5).

dbward 0.2 reports `truncated` when a result has exactly `max_rows` rows and lets the row
that crosses the byte cap in. Here a driver offers each encoded row in turn; the collector
asks for one row more than the limit to know truncation for certain, and refuses a row that
would push the result past the byte cap, so the server's size limit is never overshot.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


def row_limit_reason(max_rows: int) -> str:
    """`truncation_reason` when the row limit stopped the result (docs/protocol.md §5.6)."""
    return f"row limit reached ({max_rows})"


def size_limit_reason(max_bytes: int) -> str:
    """`truncation_reason` when the byte cap stopped the result.

    A cap of whole mebibytes reads as dbward 0.2 writes it, `size limit reached (10 MB)`
    for the 10 MiB default (§5.6); any other cap is given exactly, in bytes.
    """
    if max_bytes > 0 and max_bytes % MIB == 0:
        return f"size limit reached ({max_bytes // MIB} MB)"
    return f"size limit reached ({max_bytes} bytes)"


def longest_reason(limits: ResultLimits) -> str:
    """The longer of the two reasons: what an envelope must leave room for."""
    return max(row_limit_reason(limits.max_rows), size_limit_reason(limits.max_bytes), key=len)


@dataclass(frozen=True)
class ResultLimits:
    max_rows: int
    max_bytes: int

    @classmethod
    def for_claim(
        cls, claim_max_rows: int | None, config_max_rows: int, config_max_bytes: int
    ) -> ResultLimits:
        """The claim's `max_rows` (server policy) may lower the agent's cap, never raise it."""
        rows = config_max_rows if claim_max_rows is None else min(claim_max_rows, config_max_rows)
        return cls(max_rows=max(rows, 0), max_bytes=config_max_bytes)


class RowCollector:
    """Collects encoded rows (one JSON value each) within the limits.

    `reserved_bytes` is what the envelope around the rows will take (column list, flags), so
    the whole `result_data` stays within `max_bytes`.
    """

    def __init__(self, limits: ResultLimits, reserved_bytes: int = 0) -> None:
        self._limits = limits
        # The rows are wrapped in `[` and `]`: two bytes of the budget are theirs.
        self._budget = limits.max_bytes - reserved_bytes - 2
        self.rows: list[bytes] = []
        self.size = 0
        self.truncation_reason: str | None = None

    @property
    def truncated(self) -> bool:
        return self.truncation_reason is not None

    def offer(self, encoded_row: bytes) -> bool:
        """Append the row if it fits; False means stop reading (the result is truncated).

        Once a row was refused every later one is too, so the rows stay a prefix of the
        result: a DML batch keeps offering while it reads to its end.
        """
        if self.truncation_reason is not None:
            return False
        if len(self.rows) >= self._limits.max_rows:
            self.truncation_reason = row_limit_reason(self._limits.max_rows)
            return False
        separator = 1 if self.rows else 0
        if self.size + separator + len(encoded_row) > self._budget:
            self.truncation_reason = size_limit_reason(self._limits.max_bytes)
            return False
        self.rows.append(encoded_row)
        self.size += separator + len(encoded_row)
        return True

    def rows_json(self) -> bytes:
        """The collected rows as one JSON array."""
        return b"[" + b",".join(self.rows) + b"]"
