"""API tokens: create, list, revoke and inspect (`POST/GET /api/tokens`, ...).

Our change to dbward 0.2, deliberate: a token can never reach further than the token
that created it. A user token's effective roles must be a subset of the caller's effective
roles, and an omitted ceiling defaults to the caller's effective roles (dbward 0.2 lets
a `[requester]`-ceiling token mint an admin token for the same user).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from application.server.identity.events import identity_event, token_created_event
from application.server.identity.issuing import check_subject_id, issue_token
from application.server.identity.roles import RoleDirectory, role_names, unique_names
from application.server.ports.identity import IdentityRepository, TokenFilters
from application.server.ports.services import ServerClock
from application.server.ports.store import Store
from application.server.settings import ServerSettings
from domain.server.api_tokens import SubjectType, TokenRecord, TokenStatus, is_agent_ceiling_allowed
from domain.server.errors import Conflict, Forbidden, NotFound, Validation
from domain.server.rbac import (
    Permission,
    Principal,
    Role,
    apply_ceiling,
    authorize,
    effective_permissions,
)
from domain.server.rbac import Token as TokenContext

__all__ = ["ExplainedForbidden", "IssuedToken", "TokenInspection", "TokenRequest", "TokenService"]

MAX_TOKEN_NAME_LENGTH = 128


class ExplainedForbidden(Forbidden):
    """A refusal whose reason helps the caller fix the call (the API shows the message)."""

    public = True


@dataclass(frozen=True)
class TokenRequest:
    """`POST /api/tokens`. `scope_ceiling` None = not given."""

    subject_id: str
    subject_type: SubjectType
    name: str | None = None
    scope_ceiling: tuple[str, ...] | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `token` is the plaintext, shown this once."""

    record: TokenRecord
    token: str
    effective_roles: tuple[str, ...]
    effective_permissions: tuple[str, ...]


@dataclass(frozen=True)
class TokenInspection:
    record: TokenRecord
    resolved_roles: tuple[str, ...]
    effective_roles: tuple[str, ...]
    effective_permissions: tuple[str, ...]


def _owner_key(record: TokenRecord, principal: Principal) -> str:
    """The token's owner as `rbac.Token` compares it: a user and an agent with the same id
    are different subjects."""
    if record.subject_type is principal.subject_type:
        return record.subject_id
    return f"{record.subject_type.value}:{record.subject_id}"


class TokenService:
    """`POST/GET /api/tokens`, `DELETE /api/tokens/{id}`, `GET /api/tokens/{id}/inspect`."""

    def __init__(
        self,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
        settings: ServerSettings,
        roles: RoleDirectory,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._random_bytes = random_bytes
        self._settings = settings
        self._roles = roles

    def create(self, principal: Principal, request: TokenRequest) -> IssuedToken:
        check_subject_id(request.subject_id)
        ceiling = None if request.scope_ceiling is None else unique_names(request.scope_ceiling)
        agent = request.subject_type is SubjectType.AGENT
        if agent:
            authorize(principal, Permission.TOKEN_CREATE_AGENT)
            if not is_agent_ceiling_allowed(ceiling):
                raise Validation(
                    'agent tokens take no scope ceiling or exactly {"roles": ["agent-default"]}'
                )
        else:
            authorize(principal, Permission.TOKEN_CREATE)
            if request.subject_id != principal.subject_id or principal.is_agent:
                raise ExplainedForbidden(
                    "user tokens can only be created for yourself; an administrator issues "
                    "another user's token with POST /api/users/{id}/reissue-initial-token"
                )
        if ceiling is not None:
            if not ceiling:
                raise Validation("scope_ceiling.roles must not be empty")
            unknown = [name for name in ceiling if not self._roles.is_role(name)]
            if unknown:
                raise Validation(f"unknown role(s) in scope_ceiling: {', '.join(unknown)}")
        if request.name is not None and not 1 <= len(request.name) <= MAX_TOKEN_NAME_LENGTH:
            raise Validation(f"name must be 1-{MAX_TOKEN_NAME_LENGTH} characters")
        now = self._clock.now()
        if request.expires_at is not None and request.expires_at <= now:
            raise Validation("expires_at must be in the future")

        with self._store.write() as session:
            repo = session.identity
            if agent:
                resolved = self._roles.resolve(SubjectType.AGENT, (), ())
            else:
                resolved = self._user_roles(repo, request.subject_id)
                if ceiling is None:  # auto-ceiling: what the calling token may use
                    ceiling = tuple(n for n in role_names(resolved) if n in principal.role_names)
            try:
                effective = apply_ceiling(resolved, ceiling, request.subject_type)
            except Forbidden:
                raise Validation(
                    f"scope_ceiling {list(ceiling or ())} shares no role with the subject's "
                    f"roles {list(role_names(resolved))}: the token could never be used",
                    code="insufficient_scope",
                ) from None
            if not agent:
                beyond = [n for n in role_names(effective) if n not in principal.role_names]
                if beyond:
                    raise ExplainedForbidden(
                        f"a token cannot grant roles the calling token does not have: "
                        f"{', '.join(beyond)}"
                    )
            limit = self._settings.auth.token_policy.max_active_tokens_per_user
            if limit and repo.count_active(request.subject_type, request.subject_id, now) >= limit:
                raise Validation(
                    f"{request.subject_id} already has {limit} active tokens (the limit, "
                    "[auth.token_policy] max_active_tokens_per_user): revoke one first",
                    code="token_limit_reached",
                )
            raw, record = issue_token(
                random_bytes=self._random_bytes,
                new_id=self._new_id,
                subject_type=request.subject_type,
                subject_id=request.subject_id,
                ceiling=ceiling,
                name=request.name,
                kind=None,
                expires_at=request.expires_at,
                now=now,
            )
            repo.add_token(record)
            session.audit.append(token_created_event(self._new_id, now, principal, record))
        return IssuedToken(record, raw, role_names(effective), effective_permissions(effective))

    def _user_roles(self, repo: IdentityRepository, user_id: str) -> tuple[Role, ...]:
        user = repo.get_user(user_id)
        if user is None or user.is_deleted:
            raise NotFound(f"user {user_id!r} not found", resource="user")
        if user.is_suspended:
            raise Conflict(f"user {user_id!r} is suspended", code="user_suspended")
        try:
            return self._roles.resolve_user(user, repo.groups_of(user_id))
        except Forbidden:
            raise Validation(
                f"{user_id!r} resolves to no role: give it roles or groups, or set "
                "[auth] default_role",
                code="no_roles_resolved",
            ) from None

    def list(self, principal: Principal, filters: TokenFilters) -> list[TokenRecord]:
        authorize(principal, Permission.TOKEN_LIST)
        with self._store.read() as session:
            return session.identity.list_tokens(replace(filters, include_bootstrap=False))

    def revoke(self, principal: Principal, token_id: str) -> TokenRecord:
        now = self._clock.now()
        with self._store.write() as session:
            record = self._visible(session.identity, token_id)
            authorize(
                principal, Permission.TOKEN_REVOKE, TokenContext(_owner_key(record, principal))
            )
            if not session.identity.revoke_token(token_id, now):
                raise Conflict("token is already revoked", code="token_already_revoked")
            session.audit.append(
                identity_event(
                    self._new_id,
                    now,
                    "token.revoked",
                    principal,
                    ("token", token_id),
                    {
                        "revoked_by": principal.subject_id,
                        "subject_id": record.subject_id,
                        "subject_type": record.subject_type.value,
                        "self_revoke": _owner_key(record, principal) == principal.subject_id,
                    },
                )
            )
        return replace(record, status=TokenStatus.REVOKED, revoked_at=now)

    def inspect(self, principal: Principal, token_id: str) -> TokenInspection:
        with self._store.read() as session:
            repo = session.identity
            record = self._visible(repo, token_id)
            if _owner_key(record, principal) != principal.subject_id:
                authorize(principal, Permission.TOKEN_LIST)
            resolved: tuple[Role, ...] = ()
            try:
                if record.subject_type is SubjectType.AGENT:
                    resolved = self._roles.resolve(SubjectType.AGENT, (), ())
                else:
                    user = repo.get_user(record.subject_id)
                    if user is not None and user.can_authenticate:
                        resolved = self._roles.resolve_user(user, repo.groups_of(user.id))
            except Forbidden:
                resolved = ()
        try:
            effective = apply_ceiling(resolved, record.scope_ceiling, record.subject_type)
        except Forbidden:
            effective = ()
        return TokenInspection(
            record, role_names(resolved), role_names(effective), effective_permissions(effective)
        )

    @staticmethod
    def _visible(repo: IdentityRepository, token_id: str) -> TokenRecord:
        record = repo.get_token(token_id)
        if record is None or record.is_bootstrap:
            raise NotFound("token not found", resource="token")
        return record
