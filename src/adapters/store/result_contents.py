"""Result bodies in the store (`[result_storage] backend = "store"`, docs/server.md §7.4).

The `result_contents` table, one row per storage key: every replica sharing the store
reads what any replica wrote, which files on one replica's disk cannot give. Each call is
its own short transaction, with the same contract as the local backend: `put` replaces
atomically (delete and insert commit together), `get` of a missing key is None, `delete`
of a missing key is no error.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select

from adapters.store.engine import read_only
from adapters.store.schema import result_contents
from application.server.ports.services import ResultContentTooLarge

__all__ = ["StoreResultContents"]


class StoreResultContents:
    """Implements `application.server.ports.services.ResultContentStore`."""

    def __init__(self, engine: Engine, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._engine = engine
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
        with self._engine.begin() as conn:
            conn.execute(delete(result_contents).where(result_contents.c.storage_key == key))
            conn.execute(insert(result_contents).values(storage_key=key, content=content))

    def get(self, key: str) -> bytes | None:
        with self._reader.connect() as conn:
            content = conn.scalar(
                select(result_contents.c.content).where(result_contents.c.storage_key == key)
            )
        return None if content is None else bytes(content)

    def delete(self, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(result_contents).where(result_contents.c.storage_key == key))
