"""Who a bearer token was a moment ago, so that a busy caller does not cost a store read
per API call (docs/server.md §4.6, "Authentication cache").

An entry holds the token's record and the `Principal` it resolved to (roles and groups
included), for `ttl_secs` (5 s). It never outlives a change made through this process:
every committed identity write (token revoked, user suspended or deleted, roles or group
membership changed) calls `clear`, and an authentication that read the store before such
a write cannot put its stale answer back (the generation check). A write this process did
not make (another replica, `dbward token revoke` run against the store) is seen when the
entry ages out: within `ttl_secs`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.server.api_tokens import TokenRecord
from domain.server.rbac import Principal

__all__ = ["AUTH_CACHE_SECS", "CachedPrincipal", "PrincipalCache"]

#: How long a resolved token is trusted without reading the store again.
AUTH_CACHE_SECS = 5.0
#: Entries kept at most; past it the cache starts over (a flood of distinct tokens).
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class CachedPrincipal:
    record: TokenRecord
    principal: Principal


class PrincipalCache:
    """Token hash → `CachedPrincipal`, thread-safe (the thread pool and the event loop
    both read it)."""

    def __init__(
        self,
        ttl_secs: float = AUTH_CACHE_SECS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_secs
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, CachedPrincipal]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Read before the store is; pass it back to `put`."""
        return self._generation

    def get(self, token_hash: str) -> CachedPrincipal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        expires, cached = entry
        if self._monotonic() >= expires:
            with self._lock:
                self._entries.pop(token_hash, None)
            return None
        return cached

    def put(self, token_hash: str, cached: CachedPrincipal, generation: int) -> None:
        """Keep `cached` unless an identity write committed since `generation` was read."""
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = (self._monotonic() + self._ttl, cached)

    def clear(self) -> None:
        """An identity write committed: forget everything, and refuse older reads."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
