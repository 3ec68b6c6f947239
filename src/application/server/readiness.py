"""Readiness (`GET /ready`): whether the store answers a trivial query.

A load balancer stops sending traffic to a replica whose store is gone; the answer is a
plain bool, and the reason goes to the log.
"""

from __future__ import annotations

import logging

from application.server.ports.store import Store

__all__ = ["StoreReadiness"]

log = logging.getLogger("dbward.server.readiness")


class StoreReadiness:
    def __init__(self, store: Store) -> None:
        self._store = store

    def store_ready(self) -> bool:
        """Whether the store answers a trivial query."""
        try:
            with self._store.read() as session:
                session.identity.ping()
        except Exception:
            log.warning("store readiness check failed", exc_info=True)
            return False
        return True
