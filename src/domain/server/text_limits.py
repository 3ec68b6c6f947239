"""Text limits in UTF-8 bytes, as the server stores and compares them.

Lengths count UTF-8 bytes (the unit every limit of the API is stated in); lone surrogates
that JSON may carry are counted and kept with `surrogatepass` rather than refused here.
"""

from __future__ import annotations


def utf8_len(text: str) -> int:
    """How many bytes `text` takes in UTF-8."""
    return len(text.encode("utf-8", "surrogatepass"))


def truncate_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")
