"""The audit events of identity changes, in one shape whichever use case records them.

A token created by `POST /api/tokens`, by a new user's initial token or by the bootstrap
is recorded by the same `token.created` event, so an auditor reads one shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from application.server.audit_events import SYSTEM_ACTOR, audit_event
from domain.server.api_tokens import TokenRecord
from domain.server.audit import AuditEvent
from domain.server.rbac import Principal

__all__ = ["identity_event", "token_created_event"]

#: The category of an identity event, by the kind of resource it is about.
_IDENTITY_CATEGORIES = {"token": "token", "user": "identity"}


def identity_event(
    new_id: Callable[[], str],
    now: datetime,
    event_type: str,
    actor: Principal | None,
    resource: tuple[Literal["token", "user"], str],
    metadata: Mapping[str, Any],
    *,
    reason: str | None = None,
) -> AuditEvent:
    """An event about a token or a user: `resource` is ("token", id) or ("user", id)."""
    resource_type, resource_id = resource
    return audit_event(
        new_id=new_id,
        now=now,
        event_type=event_type,
        category=_IDENTITY_CATEGORIES[resource_type],
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        reason=reason,
        metadata=metadata,
    )


def token_created_event(
    new_id: Callable[[], str], now: datetime, actor: Principal | None, record: TokenRecord
) -> AuditEvent:
    """`token.created`; `actor` None is the system (the bootstrap)."""
    return identity_event(
        new_id,
        now,
        "token.created",
        actor,
        ("token", record.id),
        {
            "issued_by": actor.subject_id if actor is not None else SYSTEM_ACTOR,
            "issued_for": record.subject_id,
            "subject_type": record.subject_type.value,
            "scope_ceiling": list(record.scope_ceiling) if record.scope_ceiling else None,
            "provisioning_kind": record.provisioning_kind.value
            if record.provisioning_kind
            else None,
        },
    )
