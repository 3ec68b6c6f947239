"""Result bodies in the store (`[result_storage] backend = "store"`, docs/server.md §7.4),
and the small ones of the local backend (`SmallResultsInStore`).

The `result_contents` table, one row per storage key: every replica sharing the store
reads what any replica wrote, which files on one replica's disk cannot give. Each call is
its own short transaction, with the same contract as the local backend: `put` replaces
atomically (delete and insert commit together), `get` of a missing key is None, `delete`
of a missing key is no error.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select

from adapters.store.engine import read_only
from adapters.store.schema import result_contents
from application.server.ports.services import ResultContentStore, ResultContentTooLarge

__all__ = [
    "SMALL_RESULT_BYTES",
    "SmallResultsInStore",
    "SqlResultContentRepository",
    "StoreResultContents",
]

#: The local backend keeps results up to this size in the store instead of a file.
SMALL_RESULT_BYTES = 64 * 1024

#: Built once, executed with parameter dicts.
_INSERT = insert(result_contents)
_DELETE = delete(result_contents).where(result_contents.c.storage_key == bindparam("key"))
_SELECT = select(result_contents.c.content).where(result_contents.c.storage_key == bindparam("key"))


class SqlResultContentRepository:
    """Implements `application.server.ports.store.ResultContentRepository`: the table's
    writes inside a store session's transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, key: str, content: bytes) -> None:
        self._conn.execute(_INSERT, {"storage_key": key, "content": content})

    def get(self, key: str) -> bytes | None:
        content = self._conn.scalar(_SELECT, {"key": key})
        return None if content is None else bytes(content)

    def remove(self, key: str) -> None:
        self._conn.execute(_DELETE, {"key": key})


class StoreResultContents:
    """Implements `application.server.ports.services.ResultContentStore`."""

    def __init__(
        self,
        engine: Engine,
        max_bytes: int,
        begin: Callable[[], AbstractContextManager[Connection]] | None = None,
    ) -> None:
        """`begin` opens a write transaction (default `engine.begin`); the server passes
        `SqlStore.transaction`, which queues SQLite writers on one lock."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._begin = begin or engine.begin
        self._reader = read_only(engine)
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def put(self, key: str, content: bytes) -> None:
        if len(content) > self._max_bytes:
            raise ResultContentTooLarge(
                f"result size {len(content)} exceeds limit {self._max_bytes}"
            )
        with self._begin() as conn:
            table = SqlResultContentRepository(conn)
            table.remove(key)
            table.add(key, content)

    def kept_in_store(self, size: int) -> bool:
        return size <= self._max_bytes

    def get(self, key: str) -> bytes | None:
        with self._reader.connect() as conn:
            return SqlResultContentRepository(conn).get(key)

    def delete(self, key: str) -> None:
        with self._begin() as conn:
            SqlResultContentRepository(conn).remove(key)


class SmallResultsInStore:
    """The local backend with its small results in the store's `result_contents` table.

    A file costs a create, an fsync, a rename and a directory fsync per result: most of a
    `SELECT 1`'s result submission. A small body is one more row in the store instead,
    which makes it exactly as durable as the result row that names it (same database, same
    commit rules), no more and no less. Bodies over `threshold` still go to files. Reads
    look in the store first, then on disk (files written before, or large ones); a delete
    clears both, so retention and purges need not know where a body went.
    """

    def __init__(
        self, small: StoreResultContents, large: ResultContentStore, threshold: int
    ) -> None:
        self._small = small
        self._large = large
        self._threshold = threshold

    @property
    def max_bytes(self) -> int:
        return self._large.max_bytes

    def kept_in_store(self, size: int) -> bool:
        return size <= self._threshold

    def put(self, key: str, content: bytes) -> None:
        if len(content) <= self._threshold:
            self._small.put(key, content)
        else:
            self._large.put(key, content)

    def get(self, key: str) -> bytes | None:
        content = self._small.get(key)
        return content if content is not None else self._large.get(key)

    def delete(self, key: str) -> None:
        self._small.delete(key)
        self._large.delete(key)
