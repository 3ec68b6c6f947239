"""The server's store port: one transaction at a time, with a repository per concern.

Every state change and its audit event go through one `Store.write()` session, so they
commit together or not at all (docs/server.md §7.1), with whatever an `AuditListener`
writes about the event (webhook deliveries, docs/operations.md "Webhooks"). Repositories
decide races with conditional updates and report whether they won (a `bool` or a row
count), never by reading first.

The identity repository (users, tokens, group members) and the work repository (requests,
executions, results, agents, databases, EXPLAIN jobs; one port per aggregate) are declared
beside the use cases that need them: `application.server.ports.identity` and the package
`application.server.ports.work`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar

from application.server.ports.identity import IdentityRepository
from application.server.ports.webhooks import WebhookDeliveryRepository
from application.server.ports.work import WorkRepository
from domain.server.audit import AuditEvent
from domain.server.audit_integrity import ChainHead, CheckpointProgress, PurgeCheckpoint


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

    def chain(self) -> Iterator[AuditEvent]:
        """The retained events in chain order, streamed (consume it inside the session)."""
        ...

    def head(self) -> ChainHead | None:
        """The newest event and its position; None for an empty log.

        In a write session it also holds the chain until the session ends (on PostgreSQL
        the audit advisory lock; SQLite's single writer already does), so an event the
        session appends next is chained right after this head.
        """
        ...

    def last_sequence(self) -> int:
        """The newest event's sequence number (0 for an empty log): the chain's length
        since its first event, purged events included, read without counting rows. On
        PostgreSQL a rolled-back append may skip a number, so it can run slightly ahead."""
        ...

    def checkpoint_progress(self) -> CheckpointProgress:
        """Events since the newest retained signed checkpoint (all retained events if none)."""
        ...

    def newest_checkpoint_before(self, cutoff: datetime) -> ChainHead | None:
        """The newest `audit.signed_checkpoint` event created at or before `cutoff`."""
        ...

    def purge_through(self, event_id: str) -> int:
        """Delete the events up to and including `event_id` (chain order); how many."""
        ...

    def add_purge_checkpoint(self, checkpoint: PurgeCheckpoint) -> None: ...

    def purge_checkpoint_for(self, last_purged_hash: str) -> PurgeCheckpoint | None:
        """The purge checkpoint after which a chain starting at `last_purged_hash` may begin."""
        ...


class SecretRepository(Protocol):
    """Server secrets every replica shares (docs/server.md §7.4), stored sealed.

    The repository never sees a secret in clear: callers seal with `SecretCipher` first.
    """

    def get(self, name: str) -> bytes | None:
        """The sealed value stored under `name`; None when there is none."""
        ...

    def add_if_absent(self, name: str, sealed: bytes, now: datetime) -> bool:
        """Store `sealed` unless `name` holds a value already; whether this call stored it.

        Two replicas racing both call it; exactly one wins and the other reads the
        winner's value with `get`.
        """
        ...

    def put(self, name: str, sealed: bytes, now: datetime) -> None:
        """Store `sealed` under `name`, replacing any value (a rotation)."""
        ...


class ResultContentRepository(Protocol):
    """Result bodies kept in the store's `result_contents` table, written inside the
    session's transaction (`ResultContentStore.kept_in_store` says which bodies)."""

    def add(self, key: str, content: bytes) -> None:
        """Store `content` under `key`, a key nothing holds yet (each attempt has its own)."""
        ...

    def get(self, key: str) -> bytes | None:
        """The body under `key`; None when the table holds none."""
        ...


class StoreSession(Protocol):
    @property
    def identity(self) -> IdentityRepository: ...

    @property
    def work(self) -> WorkRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def secrets(self) -> SecretRepository: ...

    @property
    def webhooks(self) -> WebhookDeliveryRepository: ...

    @property
    def result_contents(self) -> ResultContentRepository: ...


class AuditListener(Protocol):
    """Called after each audit event a write session appends, inside that session, so
    what it writes commits with the event or not at all (webhook deliveries)."""

    def on_audit(self, session: StoreSession, event: AuditEvent) -> None: ...


_P = ParamSpec("_P")
_T = TypeVar("_T")


class StoreCalls(Protocol):
    """Runs the use cases' synchronous store work from async code (routes, long-polls).

    `short`: a few statements in one or two transactions and nothing else that waits
    (no file, no network, no parse of a large text). On SQLite such work takes tens of
    microseconds of local I/O, less than handing it to a worker thread and back, so it may
    run on the event loop itself; on PostgreSQL every statement is a network round trip
    and it goes to a worker thread. `long`: anything else, always on a worker thread
    (docs/server.md §7.1, "Where store work runs").
    """

    async def short(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...

    async def long(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...


class Store(Protocol):
    def write(self) -> AbstractContextManager[StoreSession]:
        """A write transaction: commits when the block ends normally, else rolls back."""
        ...

    def read(self) -> AbstractContextManager[StoreSession]:
        """A read-only session (it never takes the write lock)."""
        ...
