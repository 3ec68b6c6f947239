"""Builds audit events the same way for every use case (docs/server.md §6.1-§6.2).

A use case appends the event in the same store session as the state change it records,
so both commit or neither does. SQL in events is literal-redacted by the caller (the raw
text stays in the request row for approvers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypedDict

from application.server.ports.work.requests import RequestRecord
from domain.server.audit import AuditEvent
from domain.server.rbac import Principal
from domain.shared.timestamps import format_timestamp

SYSTEM_ACTOR = "system"


def actor_of(principal: Principal | None) -> tuple[str, str]:
    """`(actor_id, actor_type)`: the caller, or the system for background work."""
    if principal is None:
        return SYSTEM_ACTOR, "system"
    return principal.subject_id, principal.subject_type.value


def audit_event(
    *,
    new_id: Callable[[], str],
    now: datetime,
    event_type: str,
    category: str,
    actor: Principal | None,
    outcome: str = "success",
    resource_type: str | None = None,
    resource_id: str | None = None,
    request_id: str | None = None,
    operation: str | None = None,
    database: str | None = None,
    environment: str | None = None,
    detail_fingerprint: str | None = None,
    detail_raw: str | None = None,
    reason: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    client_ip: str | None = None,
) -> AuditEvent:
    actor_id, actor_type = actor_of(actor)
    if actor is not None and actor.channel is not None:
        # Whatever the event, a call through a channel says so (docs/mcp.md).
        metadata = {**(metadata or {}), "channel": actor.channel.value}
    return AuditEvent(
        id=new_id(),
        event_type=event_type,
        event_category=category,
        outcome=outcome,
        actor_id=actor_id,
        actor_type=actor_type,
        created_at=format_timestamp(now),
        resource_type=resource_type,
        resource_id=resource_id,
        peer_ip=client_ip,
        client_ip=client_ip,
        client_ip_source="peer" if client_ip else None,
        request_id=request_id,
        operation=operation,
        database_name=database,
        environment=environment,
        detail_fingerprint=detail_fingerprint,
        detail_raw=detail_raw,
        reason=reason,
        metadata_json=json.dumps(dict(metadata or {}), sort_keys=True, separators=(",", ":")),
    )


class RequestFields(TypedDict):
    """The `audit_event` fields that place an event on one request."""

    resource_type: str
    resource_id: str
    request_id: str
    operation: str
    database: str
    environment: str


def about_request(record: RequestRecord, execution_id: str | None = None) -> RequestFields:
    """An event's request fields, taken from the record: `audit_event(..., **about_request(r))`.

    The event's resource is the request, or the execution when `execution_id` is given.
    """
    return RequestFields(
        resource_type="request" if execution_id is None else "execution",
        resource_id=record.id if execution_id is None else execution_id,
        request_id=record.id,
        operation=record.operation.value,
        database=record.database,
        environment=record.environment,
    )
