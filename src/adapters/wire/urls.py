"""URL building shared by the HTTP clients (the agent's and the CLI's)."""

from __future__ import annotations

from urllib.parse import quote


def path_segment(value: str) -> str:
    """Quote an id for use as one path segment.

    Everything outside the unreserved set is escaped, so `/`, `?` or `#` in an id cannot
    leave the segment, and `.`/`..` are escaped too, because URL normalisation would
    otherwise turn them into "this directory" / "parent directory".
    """
    quoted = quote(value, safe="")
    if quoted in {".", ".."}:
        return quoted.replace(".", "%2E")
    return quoted
