"""`StoreCalls` for stores whose every call may wait on the network: all on worker threads.

The PostgreSQL store and the in-memory fakes use it; the SQLite store has its own
(`adapters/store/sqlite_calls.py`), which keeps short work on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreCallsInThreads:
    """Short and long work alike on the event loop's default executor."""

    async def short(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await asyncio.to_thread(work, *args, **kwargs)

    async def long(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await asyncio.to_thread(work, *args, **kwargs)


#: The default of every use case that takes `calls`.
IN_THREADS = StoreCallsInThreads()
