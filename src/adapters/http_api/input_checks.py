"""Checks on API input that FastAPI's own parsing lets through.

* **Lone surrogates.** Python's `json` module decodes `"\\ud800"` into a str that cannot
  be encoded as UTF-8, so it would fail later (SQL classification, the store, the audit
  hash) as a 500. The agent routes parse with pydantic's JSON parser, which already
  refuses such input as invalid JSON; the FastAPI body models of the other routes run
  `refuse_lone_surrogates` as a validator instead, so the answer is the same kind of 400.
* **Offsets** are bounded so a value past the store's 64-bit integers is a 400, not an
  overflow in the driver.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_IDEMPOTENCY_KEY_CHARS", "MAX_OFFSET", "refuse_lone_surrogates"]

#: The largest `offset` a listing accepts.
MAX_OFFSET = 1_000_000_000
#: The longest `idempotency_key` a request may carry.
MAX_IDEMPOTENCY_KEY_CHARS = 256


def refuse_lone_surrogates(value: Any) -> Any:
    """`value` unchanged, or ValueError if any string inside it is not valid Unicode.

    Walks lists and dicts (keys included) without recursion, so deep nesting is fine.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text must be valid Unicode (no lone surrogates)") from None
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return value
