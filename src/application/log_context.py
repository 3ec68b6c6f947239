"""Which request, execution or job a log line is about, carried beside the call.

A use case (server) or the job runner (agent) binds the ids it works on; the logging
setup copies them onto every record emitted while they are bound, as JSON fields or as a
text suffix (docs/operations.md "Logs"). A context variable, so concurrent requests on
the server's event loop and threads keep their own ids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

__all__ = ["LOG_ID_FIELDS", "bind_ids", "bound_ids", "current_ids", "scoped_ids"]

#: The field names a log line can carry, in the order the text format prints them.
LOG_ID_FIELDS = ("request_id", "execution_id", "job_id")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_ids: ContextVar[Mapping[str, str]] = ContextVar("dbward_log_ids", default=_EMPTY)


def bind_ids(**ids: str | None) -> None:
    """Add `ids` (None values skipped) to the current ones, for the rest of the context:
    until the enclosing `bound_ids` block ends, else for the current thread (an agent job)
    or HTTP request (each runs in a context of its own)."""
    unknown = set(ids) - set(LOG_ID_FIELDS)
    if unknown:
        raise ValueError(f"unknown log id field(s): {sorted(unknown)}")
    _ids.set(
        MappingProxyType({**_ids.get(), **{name: value for name, value in ids.items() if value}})
    )


@contextmanager
def bound_ids(**ids: str | None) -> Iterator[None]:
    """`bind_ids` for the block only: on exit the ids are what they were before it,
    including any bound by `bind_ids` inside the block."""
    token = _ids.set(_ids.get())
    try:
        bind_ids(**ids)
        yield
    finally:
        _ids.reset(token)


def scoped_ids(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run each call of `method` in a `bound_ids()` block, so the ids a use case binds
    describe its own log lines and end with the call."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with bound_ids():
            return method(*args, **kwargs)

    return call


def current_ids() -> Mapping[str, str]:
    """The ids bound in this context (empty outside any `bound_ids` block)."""
    return _ids.get()
