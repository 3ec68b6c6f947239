"""Audit sweeps: signed checkpoints and the purge of old events (docs/server.md §6.6, §7.2).

Checkpoints put the server's signature inside the log at regular points, so a rewrite of
earlier events is caught by verify even without an anchor kept outside. The purge
implements `[retention].audit_ttl_days`: it removes the events up to the newest signed
checkpoint at or before the cutoff (a checkpoint, not just any event, so what remains
starts at a point the server once vouched for) and records a signed purge checkpoint, from
which verify then starts. Both run in one short write transaction each, holding the chain
(`AuditRepository.head` in a write session), so another writer or replica cannot slip an
event between the head they sign and the event they append.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from application.server.audit_events import audit_event
from application.server.ports.services import AuditSigner
from application.server.requests.common import new_uuid
from application.server.settings import ServerSettings
from application.server.sweeps import SweepJob
from domain.server.audit_integrity import (
    PURGE_CHECKPOINT_EVENT,
    SIGNED_CHECKPOINT_EVENT,
    PurgeCheckpoint,
    checkpoint_due,
    checkpoint_message,
    checkpoint_metadata,
    key_id_of,
    purge_message,
)
from domain.shared.timestamps import format_timestamp

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["AUDIT_CHECKPOINT_CHECK_SECS", "AUDIT_PURGE_INTERVAL_SECS", "AuditMaintenance"]

#: How often the checkpoint sweep looks whether a checkpoint is due
#: (`domain.server.audit_integrity.checkpoint_due`: 100 events, or an hour with events).
AUDIT_CHECKPOINT_CHECK_SECS = 60.0
#: How often the purge sweep runs (dbward 0.2's `record_purge`: hourly).
AUDIT_PURGE_INTERVAL_SECS = 3600.0


class AuditMaintenance:
    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        signer: AuditSigner,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self._store = store
        self._settings = settings
        self._signer = signer
        self._new_id = new_id
        self._key_id = key_id_of(signer.public_key_hex())

    @property
    def schedule(self) -> tuple[SweepJob, ...]:
        """`(interval, sweep)` pairs for `sweeps.SweepRunner`."""
        return (
            (AUDIT_CHECKPOINT_CHECK_SECS, self.write_checkpoint),
            (AUDIT_PURGE_INTERVAL_SECS, self.purge_expired),
        )

    def write_checkpoint(self, now: datetime, *, force: bool = False) -> int:
        """Append a signed checkpoint when one is due (or `force`, if any event came since)."""
        with self._store.write() as session:
            head = session.audit.head()  # holds the chain until this session ends
            progress = session.audit.checkpoint_progress()
            if head is None or progress.events_since == 0:
                return 0
            if not force and not checkpoint_due(progress, now):
                return 0
            created_at = format_timestamp(now)
            signature = self._signer.sign(
                checkpoint_message(head, progress.events_since, created_at)
            )
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type=SIGNED_CHECKPOINT_EVENT,
                    category="policy",
                    actor=None,
                    outcome="info",
                    metadata=checkpoint_metadata(
                        head, progress.events_since, created_at, self._key_id, signature
                    ),
                )
            )
        return 1

    def purge_expired(self, now: datetime) -> int:
        """Purge events older than `audit_ttl_days`, up to a signed checkpoint; how many."""
        ttl_days = self._settings.retention.audit_ttl_days
        cutoff = now - timedelta(days=ttl_days)
        with self._store.write() as session:
            session.audit.head()  # hold the chain: replicas purge one after the other
            boundary = session.audit.newest_checkpoint_before(cutoff)
            if boundary is None:
                return 0
            purged = session.audit.purge_through(boundary.event_id)
            if purged == 0:
                return 0
            purged_before = format_timestamp(cutoff)
            checkpoint = PurgeCheckpoint(
                id=self._new_id(),
                last_purged_event_id=boundary.event_id,
                last_purged_hash=boundary.event_hash,
                purged_through_position=boundary.position,
                purged_count=purged,
                purged_before=purged_before,
                key_id=self._key_id,
                signature=self._signer.sign(
                    purge_message(
                        boundary.event_id, boundary.event_hash, boundary.position, purged_before
                    )
                ),
                created_at=format_timestamp(now),
            )
            session.audit.add_purge_checkpoint(checkpoint)
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type=PURGE_CHECKPOINT_EVENT,
                    category="policy",
                    actor=None,
                    outcome="info",
                    reason=f"audit events older than {ttl_days} days",
                    metadata=checkpoint.metadata(),
                )
            )
        return purged
