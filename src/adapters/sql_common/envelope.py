"""The `result_data` of a job, written byte for byte alike by every engine.

A SELECT plan answers `{"rows":[…],"truncated":…,"truncation_reason":…,"columns":[…]}`,
a DML plan `{"rows_affected":…}`: compact JSON, keys in this order, non-ASCII kept raw.
A DML plan whose statements returned rows (RETURNING, a SELECT the server escalated to a
write, a writable CTE) answers `{"rows_affected":…,"rows":[…],…,"columns":[…]}`: the
SELECT envelope behind the count, under the same limits (docs/protocol.md §5.1).
The server stores and forwards these bytes untouched and checks them against its size
limit, so PostgreSQL and MySQL must write the same shape and must agree on how many bytes
the envelope takes besides the rows: the row collector reserves exactly that up front, so
the whole `result_data` never exceeds the byte cap, whichever way the result ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from domain.agent.result_limits import ResultLimits, RowCollector, longest_reason
from domain.shared.jobs import ExecutionOutput

#: The widest `rows_affected` the wire carries (a u64, docs/protocol.md §2.3): a DML
#: envelope's count is known only once the batch ends, so the reserve assumes this one.
_WIDEST_ROWS_AFFECTED = 2**64 - 1


def _head(rows_affected: int | None) -> bytes:
    """Everything before the first row: the count of a DML envelope, then the array."""
    if rows_affected is None:
        return b'{"rows":['
    return b'{"rows_affected":%d,"rows":[' % rows_affected


def _tail(truncation_reason: str | None, columns_json: bytes) -> bytes:
    """Everything after the last row, from the array's closing bracket on."""
    return b"".join(
        (
            b'],"truncated":',
            b"false" if truncation_reason is None else b"true",
            b',"truncation_reason":',
            orjson.dumps(truncation_reason),
            b',"columns":',
            columns_json,
            b"}",
        )
    )


def encode_columns(columns: Sequence[dict[str, str]]) -> bytes:
    """The `columns` list (`[{"name":…,"type":…},…]`) as it goes into the envelope."""
    return orjson.dumps(list(columns))


def reserved_bytes(limits: ResultLimits, columns_json: bytes, *, dml: bool = False) -> int:
    """What `result_data` takes besides the rows and their brackets, at its longest.

    This is `RowCollector`'s `reserved_bytes` (the collector counts the array's brackets
    itself). The longest envelope is a truncated one with the longer of the two reasons:
    `true` and any quoted reason outweigh `false` and `null`; a DML envelope's (`dml`)
    with the widest count.
    """
    head = _head(_WIDEST_ROWS_AFFECTED if dml else None)
    longest = head + _tail(longest_reason(limits), columns_json)
    return len(longest) - len(b"[]")


def result_data(
    rows: list[bytes],
    truncation_reason: str | None,
    columns_json: bytes,
    rows_affected: int | None = None,
) -> str:
    """The envelope around rows already encoded as JSON objects; `truncated` follows the reason.

    `rows_affected` is given for a DML plan's rows, and then leads the envelope.

    The row list is consumed (left empty): joining it once, with the head and tail glued to
    the first and last row, keeps the peak at the rows plus one copy of the text rather
    than two, which matters for a result near the 10 MiB cap.
    """
    head = _head(rows_affected)
    tail = _tail(truncation_reason, columns_json)
    if not rows:
        return (head + tail).decode("utf-8")
    rows[0] = head + rows[0]
    rows[-1] = rows[-1] + tail
    data = b",".join(rows)
    rows.clear()
    return data.decode("utf-8")


def select_output(collector: RowCollector | None, columns_json: bytes) -> ExecutionOutput:
    """The output of a SELECT plan: the collected rows (consumed), or none at all.

    `collector` is None when no statement of the plan returned rows.
    """
    if collector is None:
        return ExecutionOutput(result_data=result_data([], None, columns_json), truncated=False)
    reason = collector.truncation_reason
    data = result_data(collector.rows, reason, columns_json)
    return ExecutionOutput(result_data=data, truncated=reason is not None)


def dml_output(
    rows_affected: int, returned: RowCollector | None = None, columns_json: bytes = b"[]"
) -> ExecutionOutput:
    """The output of a committed DML plan.

    `returned` holds the rows its statements returned (consumed), collected with
    `reserved_bytes(..., dml=True)`; None when no statement returned rows, and then the
    answer is dbward 0.2's `{"rows_affected":N}` exactly, with no `truncated` flag.
    """
    if returned is None:
        data = orjson.dumps({"rows_affected": rows_affected}).decode()
        return ExecutionOutput(result_data=data, rows_affected=rows_affected)
    reason = returned.truncation_reason
    data = result_data(returned.rows, reason, columns_json, rows_affected)
    return ExecutionOutput(
        result_data=data, rows_affected=rows_affected, truncated=reason is not None
    )
