"""The audit log's storage: append inside the caller's transaction, list, walk, purge (§6).

The hash formula is `domain.server.audit` (chain_version 2); this module only decides *which* event
is the previous one, and makes sure that decision is the same for every writer:

* **PostgreSQL** (several replicas may share the database): `append_event` first takes
  `pg_advisory_xact_lock(AUDIT_LOCK_KEY)`, held until the caller's transaction ends, then
  reads the head. The next writer's lock waits for that commit and, under READ COMMITTED
  (which `engine.create_store_engine` pins), its head read sees it. One linear chain.
* **SQLite**: transactions begin with `BEGIN IMMEDIATE`, so the writer already holds the
  database's only write lock when it reads the head.
* **Both**: a unique index on `COALESCE(prev_hash, '')` (`ux_audit_events_prev_hash`) lets no
  two events name the same predecessor, so even a writer that bypassed the lock, or ran
  under a snapshot isolation level, gets an IntegrityError instead of forking the chain.

The lock is held until the caller commits, so audited transactions are serialised: append
the event as the last statement of a short transaction.

`seq` (insertion order) is the chain order: the head is the highest `seq`, verification
walks `seq` ascending, listing shows `seq` descending (newest first). A *position*
(docs/server.md §6.6) is not `seq` (PostgreSQL sequences skip numbers on rollback): it is
the number of events purged before the retained chain (`audit_purge_checkpoints`) plus the
event's rank among the retained ones.

After a purge the retained chain starts right after the purge checkpoint's
`last_purged_hash`; should a purge ever leave the table empty, the next event is chained
after that hash too, so the chain never restarts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, delete, func, insert, select

from adapters.store.engine import READ_ONLY
from adapters.store.prepared import prepared
from adapters.store.schema import audit_events, audit_purge_checkpoints, format_timestamp
from domain.server.audit import CHAIN_VERSION, AuditEvent, chain
from domain.server.audit_integrity import (
    SIGNED_CHECKPOINT_EVENT,
    ChainHead,
    CheckpointProgress,
    PurgeCheckpoint,
)

#: `pg_advisory_xact_lock` key: the first 8 bytes of sha256("dbward.audit_chain").
AUDIT_LOCK_NAME = "dbward.audit_chain"
AUDIT_LOCK_KEY = int.from_bytes(
    hashlib.sha256(AUDIT_LOCK_NAME.encode()).digest()[:8], "big", signed=True
)

#: Rows fetched per round trip while verifying (a server-side cursor on PostgreSQL).
VERIFY_BATCH_ROWS = 1000

_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(AuditEvent))
_COLUMNS = tuple(audit_events.c[name] for name in _FIELDS)

# Built once, executed with plain parameter dicts: an event is appended by nearly every
# write, and `insert(...).values(**row)` re-coerces each of its columns on every call (the
# largest item of the create route's profile, docs/performance.md).
_HEAD = prepared(select(audit_events.c.event_hash).order_by(audit_events.c.seq.desc()).limit(1))
_PURGED_HEAD = prepared(
    select(audit_purge_checkpoints.c.last_purged_hash)
    .order_by(audit_purge_checkpoints.c.purged_through_position.desc())
    .limit(1)
)
_INSERT = prepared(insert(audit_events))


def append_event(
    conn: Connection, event: AuditEvent, *, head_hash: str | None = None
) -> AuditEvent:
    """Insert `event` chained after the current head; return it with its hashes.

    Runs inside the caller's transaction (`with engine.begin() as conn:`), so the event
    commits or rolls back with the state change it records. `event.prev_hash` and
    `event.event_hash` are ignored and recomputed. `head_hash`: the head's hash when the
    caller knows it, because this transaction appended the head itself (it holds the
    chain since, so nothing else appended after it); the head is read otherwise.
    """
    if not conn.in_transaction():
        raise RuntimeError("append_event must run inside the caller's transaction (engine.begin())")
    if conn.get_execution_options().get(READ_ONLY):
        raise RuntimeError("append_event needs a write transaction, not a READ_ONLY one")
    head = head_hash
    if head is None:
        _lock_chain(conn)
        head = conn.scalar(_HEAD)
        if head is None:
            head = conn.scalar(_PURGED_HEAD)
    linked = chain(event, head)
    values: dict[str, Any] = {name: getattr(linked, name) for name in _FIELDS}
    values["chain_version"] = CHAIN_VERSION
    conn.execute(_INSERT, values)
    return linked


def list_events(
    conn: Connection,
    *,
    actor_id: str | None = None,
    event_type: str | None = None,
    event_category: str | None = None,
    outcome: str | None = None,
    database: str | None = None,
    environment: str | None = None,
    request_id: str | None = None,
    operation: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events matching every given filter, newest first.

    `since` and `until` are inclusive and compare with `created_at` as stored (the fixed
    `schema.TIMESTAMP_FORMAT`). Clamping `limit` (the API allows at most 200) is the
    caller's business; here it only has to be positive.
    """
    if limit < 1 or offset < 0:
        raise ValueError(f"limit must be >= 1 and offset >= 0 (got {limit}, {offset})")
    query: Select[Any] = select(*_COLUMNS)
    equal = {
        audit_events.c.actor_id: actor_id,
        audit_events.c.event_type: event_type,
        audit_events.c.event_category: event_category,
        audit_events.c.outcome: outcome,
        audit_events.c.database_name: database,
        audit_events.c.environment: environment,
        audit_events.c.request_id: request_id,
        audit_events.c.operation: operation,
    }
    for column, wanted in equal.items():
        if wanted is not None:
            query = query.where(column == wanted)
    if since is not None:
        query = query.where(audit_events.c.created_at >= format_timestamp(since))
    if until is not None:
        query = query.where(audit_events.c.created_at <= format_timestamp(until))
    query = query.order_by(audit_events.c.seq.desc()).limit(limit).offset(offset)
    return [_event(row) for row in conn.execute(query)]


def chain_in_order(conn: Connection) -> Iterator[AuditEvent]:
    """The retained events by `seq` ascending, streamed in batches of `VERIFY_BATCH_ROWS`.

    One statement, so one consistent snapshot. On SQLite use a `READ_ONLY` connection
    (`engine.read_only`) so a long walk does not hold the write lock.
    """
    query = (
        select(*_COLUMNS)
        .order_by(audit_events.c.seq.asc())
        .execution_options(yield_per=VERIFY_BATCH_ROWS)
    )
    return _events(conn.execute(query))


def head(conn: Connection) -> ChainHead | None:
    """The newest event and its position; in a write transaction, lock the chain first."""
    if not conn.get_execution_options().get(READ_ONLY):
        _lock_chain(conn)
    row = conn.execute(
        select(audit_events.c.id, audit_events.c.event_hash, audit_events.c.created_at)
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    position = _purged_base(conn) + int(
        conn.scalar(select(func.count()).select_from(audit_events)) or 0
    )
    return ChainHead(row.id, row.event_hash, position, row.created_at)


def last_sequence(conn: Connection) -> int:
    """The newest event's `seq`: one primary-key lookup, no count."""
    return int(conn.scalar(select(func.max(audit_events.c.seq))) or 0)


def checkpoint_progress(conn: Connection) -> CheckpointProgress:
    last = conn.execute(
        select(audit_events.c.seq, audit_events.c.created_at)
        .where(audit_events.c.event_type == SIGNED_CHECKPOINT_EVENT)
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    ).first()
    count = select(func.count()).select_from(audit_events)
    if last is not None:
        count = count.where(audit_events.c.seq > last.seq)
    return CheckpointProgress(
        events_since=int(conn.scalar(count) or 0),
        last_checkpoint_at=None if last is None else last.created_at,
    )


def newest_checkpoint_before(conn: Connection, cutoff: datetime) -> ChainHead | None:
    row = conn.execute(
        select(
            audit_events.c.seq,
            audit_events.c.id,
            audit_events.c.event_hash,
            audit_events.c.created_at,
        )
        .where(
            audit_events.c.event_type == SIGNED_CHECKPOINT_EVENT,
            audit_events.c.created_at <= format_timestamp(cutoff),
        )
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    rank = conn.scalar(
        select(func.count()).select_from(audit_events).where(audit_events.c.seq <= row.seq)
    )
    return ChainHead(row.id, row.event_hash, _purged_base(conn) + int(rank or 0), row.created_at)


def purge_through(conn: Connection, event_id: str) -> int:
    """Delete the events up to and including `event_id`, in chain order; how many."""
    last = conn.scalar(select(audit_events.c.seq).where(audit_events.c.id == event_id))
    if last is None:
        return 0
    return int(conn.execute(delete(audit_events).where(audit_events.c.seq <= last)).rowcount)


def add_purge_checkpoint(conn: Connection, checkpoint: PurgeCheckpoint) -> None:
    conn.execute(
        insert(audit_purge_checkpoints).values(
            id=checkpoint.id,
            last_purged_event_id=checkpoint.last_purged_event_id,
            last_purged_hash=checkpoint.last_purged_hash,
            purged_through_position=checkpoint.purged_through_position,
            purged_count=checkpoint.purged_count,
            purged_before=checkpoint.purged_before,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature.hex(),
            created_at=checkpoint.created_at,
        )
    )


def purge_checkpoint_for(conn: Connection, last_purged_hash: str) -> PurgeCheckpoint | None:
    row = conn.execute(
        select(audit_purge_checkpoints).where(
            audit_purge_checkpoints.c.last_purged_hash == last_purged_hash
        )
    ).first()
    if row is None:
        return None
    values = dict(row._mapping)
    try:
        values["signature"] = bytes.fromhex(values["signature"])
    except ValueError:
        values["signature"] = b""
    return PurgeCheckpoint(**values)


def _purged_base(conn: Connection) -> int:
    """Events purged before the retained chain (0 when nothing was ever purged)."""
    return int(
        conn.scalar(select(func.max(audit_purge_checkpoints.c.purged_through_position))) or 0
    )


def _lock_chain(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(AUDIT_LOCK_KEY)))


def _events(rows: Iterator[Row[Any]]) -> Iterator[AuditEvent]:
    for row in rows:
        yield _event(row)


def _event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(**row._mapping)
