"""Identity routes: health, readiness, `/api/me`, tokens, users and the audit API.

docs/server.md §4.5, §6, §8.2. Route functions are sync on purpose: they call the store,
and FastAPI runs sync routes (and the `current_principal` dependency) in its thread pool.
Request bodies are pydantic models with `extra="forbid"` (dbward 0.2's
`deny_unknown_fields`); a malformed body becomes a 400 envelope (`errors.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, field_validator

from adapters.http_api.auth import current_principal
from adapters.http_api.input_checks import MAX_OFFSET, refuse_lone_surrogates
from adapters.http_api.routing import api_router
from application.server.identity.audit_integrity import AuditIntegrity, SignedHead
from application.server.identity.audit_queries import AuditQueries
from application.server.identity.authentication import Me
from application.server.identity.tokens import TokenRequest, TokenService
from application.server.identity.users import (
    InitialToken,
    NewUser,
    UserChanges,
    UserOutcome,
    UserService,
    UserView,
)
from application.server.ports.identity import TokenFilters
from application.server.ports.store import AuditFilters
from application.server.readiness import StoreReadiness
from domain.server.api_tokens import SubjectType, TokenRecord, TokenStatus
from domain.server.audit import AuditEvent
from domain.server.audit_integrity import ChainVerdict
from domain.server.errors import Validation
from domain.server.rbac import Principal, Role
from domain.shared.timestamps import format_timestamp

CallerDep = Annotated[Principal, Depends(current_principal)]


# --- bodies --------------------------------------------------------------------------------


class _IdentityBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check_text = field_validator("*")(refuse_lone_surrogates)


class ScopeCeilingBody(_IdentityBody):
    roles: list[str]


class CreateTokenBody(_IdentityBody):
    subject_id: str
    subject_type: SubjectType = SubjectType.USER
    name: str | None = None
    scope_ceiling: ScopeCeilingBody | None = None
    expires_at: AwareDatetime | None = None


class CreateUserBody(_IdentityBody):
    id: str
    roles: list[str] = []
    groups: list[str] = []
    display_name: str | None = None
    email: str | None = None


class UpdateUserBody(_IdentityBody):
    roles: list[str] | None = None
    add_roles: list[str] | None = None
    rm_roles: list[str] | None = None
    add_groups: list[str] | None = None
    rm_groups: list[str] | None = None


# --- JSON shapes ---------------------------------------------------------------------------


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _ceiling(roles: tuple[str, ...] | None) -> dict[str, list[str]] | None:
    return None if roles is None else {"roles": list(roles)}


def _role_json(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "permissions": list(role.permissions),
        "databases": list(role.databases) or ["*"],
        "environments": list(role.environments) or ["*"],
    }


def _token_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "subject_type": record.subject_type.value,
        "subject_id": record.subject_id,
        "token_prefix": record.token_prefix,
        "scope_ceiling": _ceiling(record.scope_ceiling),
        "name": record.name,
        "status": record.status.value,
        "provisioning_kind": (
            None if record.provisioning_kind is None else record.provisioning_kind.value
        ),
        "expires_at": _ts(record.expires_at),
        "created_at": _ts(record.created_at),
        "revoked_at": _ts(record.revoked_at),
    }


def _user_json(view: UserView) -> dict[str, Any]:
    user = view.user
    return {
        "id": user.id,
        "display_name": user.display_name,
        "email": user.email,
        "roles": list(user.roles),
        "groups": list(view.groups),
        "status": user.status.value,
        "lifecycle_state": user.lifecycle_state.value,
        "created_at": _ts(user.created_at),
        "updated_at": _ts(user.updated_at),
        "last_seen_at": _ts(user.last_seen_at),
    }


def _initial_token_json(issued: InitialToken) -> dict[str, Any]:
    return {
        "id": issued.user.user.id,
        "token": issued.token,
        "token_id": issued.record.id,
        "token_prefix": issued.record.token_prefix,
        "roles": list(issued.record.scope_ceiling or ()),
        "groups": list(issued.user.groups),
        "scope_ceiling": _ceiling(issued.record.scope_ceiling),
        "revoked_tokens": list(issued.revoked_tokens),
    }


def _outcome_json(outcome: UserOutcome, status: str) -> dict[str, Any]:
    return {
        "id": outcome.user_id,
        "status": status,
        "revoked_tokens": len(outcome.revoked_tokens),
        "revoked_token_ids": list(outcome.revoked_tokens),
        "cancelled_requests": list(outcome.cancelled_requests),
    }


def _event_json(event: AuditEvent) -> dict[str, Any]:
    body: dict[str, Any] = dict(event.__dict__)
    try:
        body["metadata"] = json.loads(event.metadata_json)
    except ValueError:
        body["metadata"] = None
    return body


def _head_json(signed: SignedHead) -> dict[str, Any]:
    head = signed.head
    return {
        "event_id": head.event_id,
        "event_hash": head.event_hash,
        "position": head.position,
        "created_at": head.created_at,
        "signed_message": signed.anchor.message.decode(),
        "signature": signed.anchor.signature.hex(),
        "key_id": signed.anchor.key_id,
        "public_key": signed.public_key_hex,
        "anchor": signed.anchor.encode(),
    }


def _verdict_json(verdict: ChainVerdict) -> dict[str, Any]:
    body: dict[str, Any] = {
        "total_events": verdict.total_events,
        "first_broken_id": verdict.first_broken_id,
        "valid": verdict.valid,
        "reason": None if verdict.reason is None else verdict.reason.value,
    }
    if verdict.anchor_verified is not None:
        body["anchor_verified"] = verdict.anchor_verified
    return body


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Validation(f"{name} must be an RFC 3339 time, e.g. 2030-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise Validation(f"{name} needs a UTC offset (Z or +HH:MM)")
    return moment


# --- the router ----------------------------------------------------------------------------


def build_identity_router(
    *,
    tokens: TokenService,
    users: UserService,
    audit: AuditQueries,
    audit_integrity: AuditIntegrity,
    readiness: StoreReadiness,
    min_agent_version: str,
    version: str,
    is_draining: Callable[[], bool] = lambda: False,
) -> APIRouter:
    router = api_router()

    # public

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": version,
            "min_agent_version": min_agent_version,
        }

    @router.get("/ready")
    def ready() -> JSONResponse:
        store = "ok" if readiness.store_ready() else "error"
        draining = is_draining()
        if draining or store != "ok":
            status = "draining" if draining else "degraded"
            return JSONResponse(
                status_code=503, content={"status": status, "checks": {"store": store}}
            )
        return JSONResponse(content={"status": "ok", "checks": {"store": store}})

    # the caller

    @router.get("/api/me")
    def me(caller: CallerDep) -> dict[str, Any]:
        found = Me.of(caller)
        return {
            "subject_id": found.subject_id,
            "subject_type": found.subject_type.value,
            "roles": [_role_json(role) for role in found.roles],
            "groups": list(found.groups),
            "token_id": found.token_id,
        }

    # tokens

    @router.post("/api/tokens", status_code=201)
    def create_token(body: CreateTokenBody, caller: CallerDep) -> dict[str, Any]:
        issued = tokens.create(
            caller,
            TokenRequest(
                subject_id=body.subject_id,
                subject_type=body.subject_type,
                name=body.name,
                scope_ceiling=(
                    None if body.scope_ceiling is None else tuple(body.scope_ceiling.roles)
                ),
                expires_at=body.expires_at,
            ),
        )
        record = issued.record
        return {
            "id": record.id,
            "token": issued.token,
            "prefix": record.token_prefix,
            "subject_id": record.subject_id,
            "subject_type": record.subject_type.value,
            "name": record.name,
            "scope_ceiling": _ceiling(record.scope_ceiling),
            "effective_roles": list(issued.effective_roles),
            "effective_permissions": list(issued.effective_permissions),
            "expires_at": _ts(record.expires_at),
            "created_at": _ts(record.created_at),
        }

    @router.get("/api/tokens")
    def list_tokens(
        caller: CallerDep,
        subject: str | None = None,
        status: TokenStatus | None = None,
        type: Annotated[SubjectType | None, Query()] = None,  # the CLI's name
    ) -> dict[str, Any]:
        found = tokens.list(
            caller, TokenFilters(subject_id=subject, subject_type=type, status=status)
        )
        return {"tokens": [_token_json(record) for record in found]}

    @router.delete("/api/tokens/{token_id}")
    def revoke_token(token_id: str, caller: CallerDep) -> dict[str, Any]:
        record = tokens.revoke(caller, token_id)
        return {
            "id": record.id,
            "status": record.status.value,
            "revoked_at": _ts(record.revoked_at),
        }

    @router.get("/api/tokens/{token_id}/inspect")
    def inspect_token(token_id: str, caller: CallerDep) -> dict[str, Any]:
        found = tokens.inspect(caller, token_id)
        record = found.record
        return {
            "id": record.id,
            "subject_id": record.subject_id,
            "subject_type": record.subject_type.value,
            "name": record.name,
            "scope_ceiling": _ceiling(record.scope_ceiling),
            "resolved_roles": list(found.resolved_roles),
            "effective_roles": list(found.effective_roles),
            "effective_permissions": list(found.effective_permissions),
            "status": record.status.value,
            "expires_at": _ts(record.expires_at),
        }

    # users

    @router.post("/api/users", status_code=201)
    def create_user(body: CreateUserBody, caller: CallerDep) -> dict[str, Any]:
        issued = users.create(
            caller,
            NewUser(
                id=body.id,
                roles=tuple(body.roles),
                groups=tuple(body.groups),
                display_name=body.display_name,
                email=body.email,
            ),
        )
        return _initial_token_json(issued)

    @router.get("/api/users")
    def list_users(caller: CallerDep, include_deleted: bool = False) -> dict[str, Any]:
        found = users.list(caller, include_deleted=include_deleted)
        return {"users": [_user_json(view) for view in found]}

    @router.get("/api/users/{user_id}")
    def get_user(user_id: str, caller: CallerDep) -> dict[str, Any]:
        return _user_json(users.get(caller, user_id))

    @router.patch("/api/users/{user_id}")
    def update_user(user_id: str, body: UpdateUserBody, caller: CallerDep) -> dict[str, Any]:
        changes = UserChanges(
            roles=None if body.roles is None else tuple(body.roles),
            add_roles=tuple(body.add_roles or ()),
            rm_roles=tuple(body.rm_roles or ()),
            add_groups=tuple(body.add_groups or ()),
            rm_groups=tuple(body.rm_groups or ()),
        )
        return _user_json(users.update(caller, user_id, changes))

    @router.delete("/api/users/{user_id}")
    def delete_user(user_id: str, caller: CallerDep) -> dict[str, Any]:
        return _outcome_json(users.delete(caller, user_id), "deleted")

    @router.post("/api/users/{user_id}/suspend")
    def suspend_user(user_id: str, caller: CallerDep) -> dict[str, Any]:
        return _outcome_json(users.suspend(caller, user_id), "suspended")

    @router.post("/api/users/{user_id}/activate")
    def activate_user(user_id: str, caller: CallerDep) -> dict[str, Any]:
        return _user_json(users.activate(caller, user_id))

    @router.post("/api/users/{user_id}/reissue-initial-token")
    def reissue_initial_token(user_id: str, caller: CallerDep) -> dict[str, Any]:
        return _initial_token_json(users.reissue_initial_token(caller, user_id))

    # audit

    @router.get("/api/audit/events")
    def audit_events(
        caller: CallerDep,
        actor_id: str | None = None,
        event_type: str | None = None,
        event_category: str | None = None,
        outcome: str | None = None,
        database: str | None = None,
        environment: str | None = None,
        request_id: str | None = None,
        operation: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        filters = AuditFilters(
            actor_id=actor_id,
            event_type=event_type,
            event_category=event_category,
            outcome=outcome,
            database=database,
            environment=environment,
            request_id=request_id,
            operation=operation,
            since=_parse_time("since", since),
            until=_parse_time("until", until),
        )
        events = audit.list(caller, filters, limit=limit, offset=offset)
        return {"events": [_event_json(event) for event in events]}

    @router.get("/api/audit/head")
    def audit_head(caller: CallerDep) -> dict[str, Any]:
        return _head_json(audit_integrity.head(caller))

    @router.get("/api/audit/verify")
    def audit_verify(caller: CallerDep, anchor: str | None = None) -> dict[str, Any]:
        return _verdict_json(audit_integrity.verify(caller, anchor))

    return router
