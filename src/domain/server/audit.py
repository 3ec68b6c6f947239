"""The audit log's hash chain (docs/server.md §6.3, chain_version 2).

Each event's hash covers its fields and the previous event's hash, so changing, inserting
or deleting a row breaks the chain at that row. The field encoding is length-prefixed
(`<utf-8 byte length>:<value>`, joined by newlines), so no choice of values can make two
different events hash alike. Verification, with its anchors and checkpoints, is
`domain.server.audit_integrity`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

CHAIN_VERSION = 2


@dataclass(frozen=True)
class AuditEvent:
    id: str
    event_type: str
    event_category: str
    outcome: str
    actor_id: str
    actor_type: str
    created_at: str
    event_version: int = 1
    resource_type: str | None = None
    resource_id: str | None = None
    peer_ip: str | None = None
    client_ip: str | None = None
    client_ip_source: str | None = None
    request_id: str | None = None
    operation: str | None = None
    database_name: str | None = None
    environment: str | None = None
    detail_fingerprint: str | None = None
    detail_raw: str | None = None
    reason: str | None = None
    metadata_json: str = "{}"
    prev_hash: str | None = None
    event_hash: str = field(default="")


def hash_fields(event: AuditEvent, prev_hash: str | None) -> list[str]:
    """The hashed fields, in dbward 0.2's order; absent values hash as ""."""
    return [
        event.id,
        event.event_type,
        event.event_category,
        str(event.event_version),
        event.outcome,
        event.actor_id,
        event.actor_type,
        event.resource_type or "",
        event.resource_id or "",
        event.peer_ip or "",
        event.client_ip or "",
        event.client_ip_source or "",
        event.request_id or "",
        event.operation or "",
        event.database_name or "",
        event.environment or "",
        event.detail_fingerprint or "",
        event.detail_raw or "",
        event.reason or "",
        event.metadata_json,
        prev_hash or "",
        event.created_at,
    ]


def event_hash(event: AuditEvent, prev_hash: str | None) -> str:
    encoded = "\n".join(f"{len(value.encode())}:{value}" for value in hash_fields(event, prev_hash))
    return hashlib.sha256(encoded.encode()).hexdigest()


def chain(event: AuditEvent, prev_hash: str | None) -> AuditEvent:
    """The event linked after `prev_hash`, with its hash computed (the hash takes
    `prev_hash` as given and never the event's own link fields)."""
    return AuditEvent(
        **{**event.__dict__, "prev_hash": prev_hash, "event_hash": event_hash(event, prev_hash)}
    )
