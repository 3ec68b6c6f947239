"""The server's store port: one transaction at a time, with a repository per concern.

Every state change and its audit event go through one `Store.write()` session, so they
commit together or not at all (docs/server.md §7.1). Repositories decide races with conditional
updates and report whether they won (a `bool` or a row count), never by reading first.

The identity repository (users, tokens, group members) and the work repository (requests,
executions, results, agents, databases, EXPLAIN jobs; one port per aggregate) are declared
beside the use cases that need them: `application.server.ports.identity` and the package
`application.server.ports.work`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from application.server.ports.identity import IdentityRepository
from application.server.ports.work import WorkRepository
from domain.server.audit import AuditEvent, ChainVerdict


@dataclass(frozen=True)
class AuditFilters:
    actor_id: str | None = None
    event_type: str | None = None
    event_category: str | None = None
    outcome: str | None = None
    database: str | None = None
    environment: str | None = None
    request_id: str | None = None
    operation: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository(Protocol):
    def append(self, event: AuditEvent) -> AuditEvent:
        """Chain `event` after the current head, inside the session's transaction."""
        ...

    def list(self, filters: AuditFilters, *, limit: int, offset: int) -> list[AuditEvent]:
        """Newest first."""
        ...

    def verify(self) -> ChainVerdict: ...


class StoreSession(Protocol):
    @property
    def identity(self) -> IdentityRepository: ...

    @property
    def work(self) -> WorkRepository: ...

    @property
    def audit(self) -> AuditRepository: ...


class Store(Protocol):
    def write(self) -> AbstractContextManager[StoreSession]:
        """A write transaction: commits when the block ends normally, else rolls back."""
        ...

    def read(self) -> AbstractContextManager[StoreSession]:
        """A read-only session (it never takes the write lock)."""
        ...
