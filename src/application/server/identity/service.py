"""Identity use cases: authentication, API tokens, users, the audit API and bootstrap.

spec/server.md §4 (RBAC, tokens, the auth middleware, bootstrap), §6 (audit API) and §8.2.
Every use case is a plain class taking its ports in the constructor; each state change and
its audit event commit in one store session (`Store.write()`).

Our changes to the reference, each deliberate:

* A token can never reach further than the token that created it: a user token's effective
  roles must be a subset of the caller's effective roles, and an omitted ceiling defaults
  to the caller's effective roles (the reference lets a `[requester]`-ceiling token mint an
  admin token for the same user).
* The requester bootstrap token is a real requester-only token (ceiling `[requester]`),
  not a copy of the admin token (spec/server.md §11(c) item 17).
* A first start is recognised by the absence of any bootstrap token row, so bootstrap
  tokens an operator revoked on purpose are not silently re-created at the next start.
* `auth.failure` events are rate limited (a flood of bad tokens must not turn every
  refusal into a write transaction); the suppressed count rides on the next event.
* The last active admin cannot be suspended, deleted or stripped of `admin` (as in the
  reference), checked under an identity lock so two replicas cannot both pass it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from application.server.audit_events import audit_event
from application.server.ports.identity import (
    IdentityRepository,
    LifecycleState,
    SecretFiles,
    TokenFilters,
    UserRecord,
    UserStatus,
)
from application.server.ports.services import ServerClock
from application.server.ports.store import AuditFilters, Store, StoreSession
from application.server.settings import AuthSettings, ServerSettings
from domain.server import api_tokens
from domain.server.api_tokens import (
    ProvisioningKind,
    SubjectType,
    TokenRecord,
    TokenStatus,
    is_agent_ceiling_allowed,
    lookup_prefix,
    new_token,
    token_hash,
)
from domain.server.audit import AuditEvent, ChainVerdict
from domain.server.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    ServerDomainError,
    Unauthenticated,
    Validation,
)
from domain.server.rbac import (
    ADMIN,
    AGENT_DEFAULT,
    REQUESTER,
    Permission,
    Principal,
    Role,
    apply_ceiling,
    authorize,
    define_role,
    effective_permissions,
    resolve_roles,
    role_catalog,
)
from domain.server.rbac import Token as TokenContext
from domain.server.rbac import User as UserContext

__all__ = [
    "AuditQueries",
    "Authenticator",
    "BootstrapAction",
    "BootstrapError",
    "BootstrapOutcome",
    "Bootstrapper",
    "IdentityServices",
    "InitialToken",
    "IssuedToken",
    "Me",
    "NewUser",
    "RoleDirectory",
    "TokenInspection",
    "TokenRequest",
    "TokenService",
    "UserChanges",
    "UserOutcome",
    "UserService",
    "UserView",
]

log = logging.getLogger("dbward.server.identity")

BEARER = "Bearer "
ANONYMOUS_ACTOR = "anonymous"
#: Audit actor names; no user may take them.
RESERVED_USER_IDS = frozenset({"system", ANONYMOUS_ACTOR})
_SUBJECT_ID = re.compile(r"[A-Za-z0-9@._-]{1,128}")
MAX_TOKEN_NAME_LENGTH = 128
AUDIT_DEFAULT_LIMIT = 50
AUDIT_MAX_LIMIT = 200
INITIAL_TOKEN_NAME = "initial"  # noqa: S105 - a label, not a secret


#: Called after a user was suspended or deleted (its requests should be cancelled); may
#: return the ids of the requests it cancelled.
UserDisabledHook = Callable[[str], Sequence[str] | None]


class ExplainedForbidden(Forbidden):
    """A refusal whose reason helps the caller fix the call (the API shows the message)."""

    public = True


# --- roles ---------------------------------------------------------------------------------


class RoleDirectory:
    """The role catalog (built-in + `[[auth.roles]]`) and the `[[auth.groups]]` → roles map."""

    def __init__(self, auth: AuthSettings) -> None:
        self.catalog: Mapping[str, Role] = role_catalog(
            define_role(r.name, r.permissions, r.databases, r.environments) for r in auth.roles
        )
        self.group_roles: Mapping[str, tuple[str, ...]] = {g.name: g.roles for g in auth.groups}
        self.default_role = auth.default_role

    def is_role(self, name: str) -> bool:
        return name in self.catalog

    def is_group(self, name: str) -> bool:
        return name in self.group_roles

    def roles_of_groups(self, groups: Iterable[str]) -> tuple[str, ...]:
        names: dict[str, None] = {}
        for group in groups:
            for role in self.group_roles.get(group, ()):
                names[role] = None
        return tuple(names)

    def resolve(
        self, subject_type: SubjectType, direct_roles: Iterable[str], groups: Iterable[str]
    ) -> tuple[Role, ...]:
        """§4.3 steps 1-4; raises Forbidden `no_roles_resolved`."""
        return resolve_roles(
            subject_type,
            direct_roles,
            self.roles_of_groups(groups),
            self.default_role,
            self.catalog,
        )

    def resolve_user(self, user: UserRecord, groups: Iterable[str]) -> tuple[Role, ...]:
        """A user's roles: direct roles count only while the user is active (§4.3)."""
        direct = user.roles if user.lifecycle_state is LifecycleState.ACTIVE else ()
        return self.resolve(SubjectType.USER, direct, groups)

    def holds_admin(self, roles: Iterable[str], groups: Iterable[str]) -> bool:
        return ADMIN in set(roles) or ADMIN in self.roles_of_groups(groups)


def _names(roles: Iterable[Role]) -> tuple[str, ...]:
    return tuple(role.name for role in roles)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _check_subject_id(subject_id: str, what: str = "subject_id") -> None:
    if not _SUBJECT_ID.fullmatch(subject_id):
        raise Validation(
            f"invalid {what} {subject_id!r}: 1-128 characters from A-Z a-z 0-9 @ . _ -"
        )


def _issue(
    *,
    random_bytes: Callable[[int], bytes],
    new_id: Callable[[], str],
    subject_type: SubjectType,
    subject_id: str,
    ceiling: tuple[str, ...] | None,
    name: str | None,
    kind: ProvisioningKind | None,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[str, TokenRecord]:
    """A fresh token: the plaintext (returned once) and the row that stores only its hash."""
    raw = new_token(random_bytes(api_tokens.TOKEN_RANDOM_BYTES))
    record = TokenRecord(
        id=new_id(),
        subject_type=subject_type,
        subject_id=subject_id,
        token_hash=token_hash(raw),
        token_prefix=lookup_prefix(raw),
        scope_ceiling=ceiling,
        name=name,
        status=TokenStatus.ACTIVE,
        provisioning_kind=kind,
        expires_at=expires_at,
        created_at=now,
    )
    return raw, record


#: The category of an identity event, by the kind of resource it is about.
_IDENTITY_CATEGORIES = {"token": "token", "user": "identity"}


def _identity_event(
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


def _token_created_event(
    new_id: Callable[[], str], now: datetime, actor: Principal | None, record: TokenRecord
) -> AuditEvent:
    return _identity_event(
        new_id,
        now,
        "token.created",
        actor,
        ("token", record.id),
        {
            "issued_by": actor.subject_id if actor is not None else "system",
            "issued_for": record.subject_id,
            "subject_type": record.subject_type.value,
            "scope_ceiling": list(record.scope_ceiling) if record.scope_ceiling else None,
            "provisioning_kind": record.provisioning_kind.value
            if record.provisioning_kind
            else None,
        },
    )


# --- authentication ------------------------------------------------------------------------


@dataclass
class _FailureBudget:
    """At most `per_second` auth-failure events per second; the rest are counted."""

    per_second: int
    window: datetime | None = None
    used: int = 0
    suppressed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, now: datetime) -> int | None:
        """None when over budget; else the number suppressed since the last event."""
        second = now.replace(microsecond=0)
        with self.lock:
            if self.window != second:
                self.window, self.used = second, 0
            if self.used >= self.per_second:
                self.suppressed += 1
                return None
            self.used += 1
            suppressed, self.suppressed = self.suppressed, 0
            return suppressed


class Authenticator:
    """`Authorization` header → `Principal` (spec/server.md §4.6); usable as `Authenticate`.

    Every refusal (401, or 403 from role resolution) is recorded as an `auth.failure`
    event in its own short transaction; recording never changes the answer: a failing
    audit write is logged and the refusal still goes out as it was.
    """

    #: A user's `last_seen_at` is written at most this often (it costs a write).
    TOUCH_INTERVAL = timedelta(minutes=5)

    def __init__(
        self,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        roles: RoleDirectory,
        *,
        failure_events_per_second: int = 10,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._roles = roles
        self._budget = _FailureBudget(failure_events_per_second)
        self._touched: dict[str, datetime] = {}
        self._touch_lock = threading.Lock()

    def __call__(self, authorization: str | None) -> Principal:
        return self.authenticate(authorization)

    def authenticate(self, authorization: str | None) -> Principal:
        try:
            principal = self._authenticate(authorization)
        except (Unauthenticated, Forbidden) as exc:
            self._record_failure(exc)
            raise
        self._touch(principal)
        return principal

    def _authenticate(self, authorization: str | None) -> Principal:
        if authorization is None or not authorization.startswith(BEARER):
            raise Unauthenticated()
        raw = authorization[len(BEARER) :]
        if raw.startswith("eyJ"):
            raise Unauthenticated("OIDC is not configured", code="oidc_not_configured")
        if not api_tokens.is_well_formed(raw):
            raise Unauthenticated()  # never reaches the store
        now = self._clock.now()
        groups: list[str] = []
        with self._store.read() as session:
            repo = session.identity
            record = api_tokens.authenticate(raw, repo.find_by_prefix(lookup_prefix(raw)), now)
            if record.subject_type is SubjectType.AGENT:
                resolved = self._roles.resolve(SubjectType.AGENT, (), ())
            else:
                user = repo.get_user(record.subject_id)
                if user is None:  # fail closed: a user token needs its user row
                    raise Unauthenticated()
                if user.is_deleted:
                    raise Unauthenticated("user deleted", code="user_deleted")
                if user.is_suspended:
                    raise Unauthenticated("user suspended", code="user_suspended")
                groups = repo.groups_of(user.id)
                resolved = self._roles.resolve_user(user, groups)
        effective = apply_ceiling(resolved, record.scope_ceiling, record.subject_type)
        return Principal(
            subject_id=record.subject_id,
            subject_type=record.subject_type,
            roles=effective,
            groups=frozenset(groups),
            token_id=record.id,
        )

    def _record_failure(self, exc: ServerDomainError) -> None:
        try:
            now = self._clock.now()
            suppressed = self._budget.take(now)
            if suppressed is None:
                return
            metadata: dict[str, Any] = {"failure_reason": exc.message, "code": exc.code}
            if suppressed:
                metadata["suppressed_since_last"] = suppressed
            event = audit_event(
                new_id=self._new_id,
                now=now,
                event_type="auth.failure",
                category="auth",
                actor=None,
                outcome="denied",
                detail_raw=exc.message,
                reason=exc.message,
                metadata=metadata,
            )
            event = replace(event, actor_id=ANONYMOUS_ACTOR, actor_type="user")
            with self._store.write() as session:
                session.audit.append(event)
        except Exception:  # the refusal must go out as it is, whatever the audit write did
            log.warning("could not record an auth.failure audit event", exc_info=True)

    def _touch(self, principal: Principal) -> None:
        if principal.is_agent:
            return
        now = self._clock.now()
        with self._touch_lock:
            last = self._touched.get(principal.subject_id)
            if last is not None and now - last < self.TOUCH_INTERVAL:
                return
            if len(self._touched) > 10_000:
                self._touched.clear()
            self._touched[principal.subject_id] = now
        try:
            with self._store.write() as session:
                session.identity.touch_user(principal.subject_id, now)
        except Exception:  # bookkeeping only: never fail a request for it
            log.warning("could not record last_seen_at", exc_info=True)


@dataclass(frozen=True)
class Me:
    """`GET /api/me`: the caller with its effective roles."""

    subject_id: str
    subject_type: SubjectType
    roles: tuple[Role, ...]
    groups: tuple[str, ...]
    token_id: str | None


# --- tokens --------------------------------------------------------------------------------


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
        _check_subject_id(request.subject_id)
        ceiling = None if request.scope_ceiling is None else _unique(request.scope_ceiling)
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
                    ceiling = tuple(n for n in _names(resolved) if n in principal.role_names)
            try:
                effective = apply_ceiling(resolved, ceiling, request.subject_type)
            except Forbidden:
                raise Validation(
                    f"scope_ceiling {list(ceiling or ())} shares no role with the subject's "
                    f"roles {list(_names(resolved))}: the token could never be used",
                    code="insufficient_scope",
                ) from None
            if not agent:
                beyond = [n for n in _names(effective) if n not in principal.role_names]
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
            raw, record = _issue(
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
            session.audit.append(_token_created_event(self._new_id, now, principal, record))
        return IssuedToken(record, raw, _names(effective), effective_permissions(effective))

    def _user_roles(self, repo: IdentityRepository, user_id: str) -> tuple[Role, ...]:
        user = repo.get_user(user_id)
        if user is None or user.is_deleted:
            raise NotFound(f"user {user_id!r} not found", code="user_not_found")
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
                _identity_event(
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
            record, _names(resolved), _names(effective), effective_permissions(effective)
        )

    @staticmethod
    def _visible(repo: IdentityRepository, token_id: str) -> TokenRecord:
        record = repo.get_token(token_id)
        if record is None or record.is_bootstrap:
            raise NotFound("token not found", code="token_not_found")
        return record


# --- users ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewUser:
    id: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    display_name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class UserChanges:
    """`PATCH /api/users/{id}`: `roles` replaces the set; the rest add or remove."""

    roles: tuple[str, ...] | None = None
    add_roles: tuple[str, ...] = ()
    rm_roles: tuple[str, ...] = ()
    add_groups: tuple[str, ...] = ()
    rm_groups: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.roles is None and not (
            self.add_roles or self.rm_roles or self.add_groups or self.rm_groups
        )


@dataclass(frozen=True)
class UserView:
    user: UserRecord
    groups: tuple[str, ...]


@dataclass(frozen=True)
class UserOutcome:
    """Suspend and delete: what went with the user."""

    user_id: str
    revoked_tokens: tuple[str, ...]
    cancelled_requests: tuple[str, ...]


@dataclass(frozen=True)
class InitialToken:
    """A user's initial token (create and reissue): `token` is the plaintext, shown once."""

    user: UserView
    record: TokenRecord
    token: str
    revoked_tokens: tuple[str, ...] = ()


class UserService:
    """`/api/users…` (spec/server.md §4.5, §8.2)."""

    def __init__(
        self,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
        roles: RoleDirectory,
        *,
        on_user_suspended: UserDisabledHook | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._random_bytes = random_bytes
        self._roles = roles
        self._on_user_suspended = on_user_suspended

    # reads

    def list(self, principal: Principal, *, include_deleted: bool = False) -> list[UserView]:
        authorize(principal, Permission.USER_READ)
        with self._store.read() as session:
            users = session.identity.list_users(include_deleted=include_deleted)
            groups = session.identity.memberships()
        return [UserView(user, tuple(groups.get(user.id, ()))) for user in users]

    def get(self, principal: Principal, user_id: str) -> UserView:
        authorize(principal, Permission.USER_READ, UserContext(user_id))
        with self._store.read() as session:
            user = self._existing(session.identity, user_id)
            return UserView(user, tuple(session.identity.groups_of(user_id)))

    # writes

    def create(self, principal: Principal, new: NewUser) -> InitialToken:
        authorize(principal, Permission.USER_WRITE)
        _check_subject_id(new.id, "user id")
        if new.id in RESERVED_USER_IDS:
            raise Validation(f"user id {new.id!r} is reserved")
        roles, groups = _unique(new.roles), _unique(new.groups)
        self._check_roles(roles)
        self._check_groups(groups)
        now = self._clock.now()
        user = UserRecord(
            id=new.id,
            roles=roles,
            created_at=now,
            updated_at=now,
            display_name=new.display_name,
            email=new.email,
        )
        with self._store.write() as session:
            repo = session.identity
            if not repo.add_user(user):
                raise Conflict(f"user {new.id!r} already exists", code="user_exists")
            for group in groups:
                repo.add_member(group, new.id, now)
            raw, record = self._initial_token(user, groups, now)
            repo.add_token(record)
            session.audit.append(
                self._event(
                    "user.created",
                    principal,
                    now,
                    new.id,
                    {"roles": list(roles), "groups": list(groups)},
                )
            )
            for group in groups:
                session.audit.append(
                    self._event("group.member_added", principal, now, new.id, {"group": group})
                )
            session.audit.append(_token_created_event(self._new_id, now, principal, record))
        return InitialToken(UserView(user, groups), record, raw)

    def update(self, principal: Principal, user_id: str, changes: UserChanges) -> UserView:
        authorize(principal, Permission.USER_WRITE)
        if changes.is_empty:
            raise Validation(
                "nothing to change: give roles, add_roles, rm_roles, add_groups or rm_groups"
            )
        if changes.roles is not None and (changes.add_roles or changes.rm_roles):
            raise Validation("roles replaces the set: do not combine it with add_roles / rm_roles")
        both = set(changes.add_groups) & set(changes.rm_groups)
        if both:
            raise Validation(
                f"group(s) in both add_groups and rm_groups: {', '.join(sorted(both))}"
            )
        both = set(changes.add_roles) & set(changes.rm_roles)
        if both:
            raise Validation(f"role(s) in both add_roles and rm_roles: {', '.join(sorted(both))}")
        self._check_roles(changes.roles or ())
        self._check_roles(changes.add_roles)
        self._check_groups(changes.add_groups)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            user = self._existing(repo, user_id)
            old_groups = tuple(repo.groups_of(user_id))
            if changes.roles is not None:
                roles = _unique(changes.roles)
            else:
                roles = _unique(
                    r for r in (*user.roles, *changes.add_roles) if r not in changes.rm_roles
                )
            added = tuple(g for g in _unique(changes.add_groups) if g not in old_groups)
            removed = tuple(g for g in _unique(changes.rm_groups) if g in old_groups)
            groups = tuple(sorted({*old_groups, *added} - set(removed)))
            loses_admin = self._roles.holds_admin(
                user.roles, old_groups
            ) and not self._roles.holds_admin(roles, groups)
            if loses_admin and not user.is_suspended:
                self._guard_last_admin(repo, user_id, "remove admin from")
            if roles != user.roles and not repo.set_roles(user_id, roles, now):
                raise Gone(f"user {user_id!r} has been deleted", code="user_deleted")
            for group in added:
                repo.add_member(group, user_id, now)
                session.audit.append(
                    self._event("group.member_added", principal, now, user_id, {"group": group})
                )
            for group in removed:
                repo.remove_member(group, user_id)
                session.audit.append(
                    self._event("group.member_removed", principal, now, user_id, {"group": group})
                )
            session.audit.append(
                self._event(
                    "user.updated",
                    principal,
                    now,
                    user_id,
                    {
                        "roles_before": list(user.roles),
                        "roles": list(roles),
                        "groups_added": list(added),
                        "groups_removed": list(removed),
                    },
                )
            )
            updated = repo.get_user(user_id) or replace(user, roles=roles, updated_at=now)
        return UserView(updated, groups)

    def suspend(self, principal: Principal, user_id: str) -> UserOutcome:
        authorize(principal, Permission.USER_WRITE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            user = self._existing(repo, user_id)
            if user.is_suspended:
                raise Conflict(f"user {user_id!r} is already suspended", code="user_suspended")
            if self._roles.holds_admin(user.roles, repo.groups_of(user_id)):
                self._guard_last_admin(repo, user_id, "suspend")
            if not repo.set_status(
                user_id, UserStatus.SUSPENDED, expected=UserStatus.ACTIVE, now=now
            ):
                raise Conflict(f"user {user_id!r} changed meanwhile; try again")
            revoked = tuple(repo.revoke_all_for(SubjectType.USER, user_id, now))
            session.audit.append(
                self._event(
                    "user.suspended", principal, now, user_id, {"revoked_tokens": list(revoked)}
                )
            )
        return UserOutcome(user_id, revoked, self._after_disable(user_id))

    def activate(self, principal: Principal, user_id: str) -> UserView:
        authorize(principal, Permission.USER_WRITE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            user = self._existing(repo, user_id)
            if not user.is_suspended:
                raise Conflict(f"user {user_id!r} is not suspended", code="user_not_suspended")
            if not repo.set_status(
                user_id, UserStatus.ACTIVE, expected=UserStatus.SUSPENDED, now=now
            ):
                raise Conflict(f"user {user_id!r} changed meanwhile; try again")
            session.audit.append(self._event("user.activated", principal, now, user_id, {}))
            groups = tuple(repo.groups_of(user_id))
        return UserView(replace(user, status=UserStatus.ACTIVE, updated_at=now), groups)

    def delete(self, principal: Principal, user_id: str) -> UserOutcome:
        authorize(principal, Permission.USER_WRITE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            user = self._existing(repo, user_id)
            groups = tuple(repo.groups_of(user_id))
            if not user.is_suspended and self._roles.holds_admin(user.roles, groups):
                self._guard_last_admin(repo, user_id, "delete")
            if not repo.soft_delete(user_id, now):
                raise Gone(f"user {user_id!r} has been deleted", code="user_deleted")
            repo.remove_all_memberships(user_id)
            revoked = tuple(repo.revoke_all_for(SubjectType.USER, user_id, now))
            session.audit.append(
                self._event(
                    "user.deleted",
                    principal,
                    now,
                    user_id,
                    {"revoked_tokens": list(revoked), "groups_removed": list(groups)},
                )
            )
        return UserOutcome(user_id, revoked, self._after_disable(user_id))

    def reissue_initial_token(self, principal: Principal, user_id: str) -> InitialToken:
        authorize(principal, Permission.TOKEN_REISSUE)
        now = self._clock.now()
        with self._store.write() as session:
            repo = session.identity
            user = self._existing(repo, user_id)
            if user.is_suspended:
                raise Conflict(f"user {user_id!r} is suspended", code="user_suspended")
            groups = tuple(repo.groups_of(user_id))
            revoked = tuple(
                repo.revoke_all_for(
                    SubjectType.USER, user_id, now, provisioning_kind=ProvisioningKind.INITIAL
                )
            )
            raw, record = self._initial_token(user, groups, now)
            repo.add_token(record)
            session.audit.append(
                _identity_event(
                    self._new_id,
                    now,
                    "token.reissued_initial",
                    principal,
                    ("token", record.id),
                    {
                        "issued_by": principal.subject_id,
                        "issued_for": user_id,
                        "revoked_tokens": list(revoked),
                        "scope_ceiling": list(record.scope_ceiling or ()),
                    },
                )
            )
        return InitialToken(UserView(user, groups), record, raw, revoked)

    # helpers

    def _initial_token(
        self, user: UserRecord, groups: Sequence[str], now: datetime
    ) -> tuple[str, TokenRecord]:
        try:
            resolved = self._roles.resolve_user(user, groups)
        except Forbidden:
            raise Validation(
                f"user {user.id!r} would hold no role: give it roles or groups, or set "
                "[auth] default_role",
                code="no_roles_resolved",
            ) from None
        return _issue(
            random_bytes=self._random_bytes,
            new_id=self._new_id,
            subject_type=SubjectType.USER,
            subject_id=user.id,
            ceiling=_names(resolved),
            name=INITIAL_TOKEN_NAME,
            kind=ProvisioningKind.INITIAL,
            expires_at=None,
            now=now,
        )

    def _check_roles(self, roles: Iterable[str]) -> None:
        unknown = [name for name in roles if not self._roles.is_role(name)]
        if unknown:
            raise Validation(f"unknown role(s): {', '.join(unknown)}")

    def _check_groups(self, groups: Iterable[str]) -> None:
        unknown = [name for name in groups if not self._roles.is_group(name)]
        if unknown:
            raise Validation(f"group(s) not defined in [[auth.groups]]: {', '.join(unknown)}")

    @staticmethod
    def _existing(repo: IdentityRepository, user_id: str) -> UserRecord:
        user = repo.get_user(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found", code="user_not_found")
        if user.is_deleted:
            raise Gone(f"user {user_id!r} has been deleted", code="user_deleted")
        return user

    def _guard_last_admin(self, repo: IdentityRepository, user_id: str, action: str) -> None:
        memberships = repo.memberships()
        others = [
            user
            for user in repo.list_users()
            if user.id != user_id
            and not user.is_suspended
            and self._roles.holds_admin(user.roles, memberships.get(user.id, ()))
        ]
        if not others:
            raise Validation(
                f"cannot {action} the last active admin: make another user admin first",
                code="last_admin",
            )

    def _after_disable(self, user_id: str) -> tuple[str, ...]:
        if self._on_user_suspended is None:
            return ()
        try:
            cancelled = self._on_user_suspended(user_id)
        except Exception:  # the user is disabled either way; its requests can be cancelled later
            log.exception("cancelling the requests of disabled user %s failed", user_id)
            return ()
        return tuple(cancelled or ())

    def _event(
        self,
        event_type: str,
        principal: Principal,
        now: datetime,
        user_id: str,
        metadata: Mapping[str, Any],
    ) -> AuditEvent:
        return _identity_event(
            self._new_id, now, event_type, principal, ("user", user_id), metadata
        )


# --- audit ---------------------------------------------------------------------------------


class AuditQueries:
    """`GET /api/audit/events` and `GET /api/audit/verify` (permission `audit.read`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def list(
        self,
        principal: Principal,
        filters: AuditFilters,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[AuditEvent]:
        authorize(principal, Permission.AUDIT_READ)
        wanted = AUDIT_DEFAULT_LIMIT if limit is None else limit
        if wanted < 1:
            raise Validation("limit must be at least 1")
        if offset < 0:
            raise Validation("offset must not be negative")
        if filters.since and filters.until and filters.since > filters.until:
            raise Validation("since must not be after until")
        with self._store.read() as session:
            return session.audit.list(filters, limit=min(wanted, AUDIT_MAX_LIMIT), offset=offset)

    def verify(self, principal: Principal) -> ChainVerdict:
        authorize(principal, Permission.AUDIT_READ)
        with self._store.read() as session:
            return session.audit.verify()


# --- bootstrap -----------------------------------------------------------------------------


class BootstrapError(RuntimeError):
    """The store and the state dir disagree: the server must not start (exit with this)."""


class BootstrapAction(StrEnum):
    CREATED = "created"
    ROTATED = "rotated"
    EXISTING = "existing"
    #: Every bootstrap token was revoked by an operator: left alone, no files written.
    REVOKED = "revoked"


@dataclass(frozen=True)
class _BootstrapToken:
    name: str
    file: str
    subject_type: SubjectType
    subject_id: str
    ceiling: tuple[str, ...] | None


BOOTSTRAP_USERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("admin", (ADMIN, REQUESTER)),
    ("agent", (AGENT_DEFAULT,)),
)
BOOTSTRAP_TOKENS: tuple[_BootstrapToken, ...] = (
    _BootstrapToken(
        "bootstrap-admin", "admin-token", SubjectType.USER, "admin", (ADMIN, REQUESTER)
    ),
    _BootstrapToken("bootstrap-agent", "agent-token", SubjectType.AGENT, "agent", None),
    _BootstrapToken(
        "bootstrap-requester", "requester-token", SubjectType.USER, "admin", (REQUESTER,)
    ),
)
FORCE_HINT = (
    "restart the server once with --force-bootstrap to revoke the bootstrap tokens and "
    "write new ones"
)


@dataclass(frozen=True)
class BootstrapOutcome:
    action: BootstrapAction
    #: The token files written (empty unless created or rotated).
    files: tuple[Path, ...] = ()
    revoked_tokens: tuple[str, ...] = ()


class _BootstrapRaced(Exception):
    """Another server bootstrapped the store between our check and our write."""


class Bootstrapper:
    """First-start users, tokens and token files (spec/server.md §4.5, §11(c) item 17).

    The store is written first and the files after: a crash in between leaves active
    tokens without files, which the next start reports (fatal, with the `--force-bootstrap`
    hint) instead of leaving files that hold tokens the store does not know.
    """

    def __init__(
        self,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
        files: SecretFiles,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._random_bytes = random_bytes
        self._files = files

    def bootstrap(self, state_dir: Path, *, force: bool = False) -> BootstrapOutcome:
        if not force:
            outcome = self._check_existing(state_dir)
            if outcome is not None:
                return outcome
        try:
            return self._issue_all(state_dir, force=force)
        except _BootstrapRaced:
            outcome = self._check_existing(state_dir)
            if outcome is None:  # pragma: no cover - the race left no bootstrap row at all
                raise BootstrapError("bootstrap raced with another server; restart") from None
            return outcome

    def _check_existing(self, state_dir: Path) -> BootstrapOutcome | None:
        with self._store.read() as session:
            active = session.identity.active_bootstrap_tokens()
            ever = session.identity.count_bootstrap_tokens()
        if not active:
            return None if ever == 0 else BootstrapOutcome(BootstrapAction.REVOKED)
        by_name = {token.name or "": token for token in active}
        expected = {spec.name for spec in BOOTSTRAP_TOKENS}
        if set(by_name) != expected or len(active) != len(BOOTSTRAP_TOKENS):
            raise BootstrapError(
                f"incomplete bootstrap state: {len(active)} of {len(BOOTSTRAP_TOKENS)} "
                f"bootstrap tokens are active ({', '.join(sorted(by_name))}); {FORCE_HINT}"
            )
        missing: list[str] = []
        stale: list[str] = []
        for spec in BOOTSTRAP_TOKENS:
            path = state_dir / spec.file
            text = self._files.read_secret(path)
            if text is None:
                missing.append(str(path))
            elif token_hash(text.strip()) != by_name[spec.name].token_hash:
                stale.append(str(path))
        if missing:
            raise BootstrapError(
                f"bootstrap token file(s) missing: {', '.join(missing)}. The store keeps only "
                f"token hashes, so the tokens cannot be written again; {FORCE_HINT}"
            )
        if stale:
            raise BootstrapError(
                f"bootstrap token file(s) do not hold the active token: {', '.join(stale)}; "
                f"{FORCE_HINT}"
            )
        return BootstrapOutcome(BootstrapAction.EXISTING)

    def _issue_all(self, state_dir: Path, *, force: bool) -> BootstrapOutcome:
        now = self._clock.now()
        issued = [
            (
                spec,
                *_issue(
                    random_bytes=self._random_bytes,
                    new_id=self._new_id,
                    subject_type=spec.subject_type,
                    subject_id=spec.subject_id,
                    ceiling=spec.ceiling,
                    name=spec.name,
                    kind=ProvisioningKind.BOOTSTRAP,
                    expires_at=None,
                    now=now,
                ),
            )
            for spec in BOOTSTRAP_TOKENS
        ]
        revoked: list[str] = []
        with self._store.write() as session:
            repo = session.identity
            repo.serialize_identity_changes()
            if not force and repo.count_bootstrap_tokens() > 0:
                raise _BootstrapRaced
            for old in repo.active_bootstrap_tokens():
                if repo.revoke_token(old.id, now):
                    revoked.append(old.id)
                    session.audit.append(
                        _identity_event(
                            self._new_id,
                            now,
                            "token.revoked",
                            None,
                            ("token", old.id),
                            {"name": old.name, "subject_id": old.subject_id},
                            reason="force-bootstrap",
                        )
                    )
            for user_id, roles in BOOTSTRAP_USERS:
                self._ensure_user(session, user_id, roles, now)
            for _spec, _raw, record in issued:
                repo.add_token(record)
                session.audit.append(_token_created_event(self._new_id, now, None, record))
        written: list[Path] = []
        for spec, raw, _record in issued:
            path = state_dir / spec.file
            self._files.write_secret(path, raw)
            written.append(path)
        action = BootstrapAction.ROTATED if force else BootstrapAction.CREATED
        return BootstrapOutcome(action, tuple(written), tuple(revoked))

    def _ensure_user(
        self, session: StoreSession, user_id: str, roles: tuple[str, ...], now: datetime
    ) -> None:
        repo = session.identity
        user = repo.get_user(user_id)
        if user is None:
            repo.add_user(UserRecord(id=user_id, roles=roles, created_at=now, updated_at=now))
            session.audit.append(self._event("user.created", now, user_id, {"roles": list(roles)}))
            return
        # --force-bootstrap is the way back in: the bootstrap users work again afterwards.
        if not user.can_authenticate and repo.restore_user(user_id, now):
            session.audit.append(self._event("user.activated", now, user_id, {}))
        missing = [role for role in roles if role not in user.roles]
        if missing:
            repo.set_roles(user_id, (*user.roles, *missing), now)
            session.audit.append(
                self._event("user.updated", now, user_id, {"roles_added": missing})
            )

    def _event(
        self, event_type: str, now: datetime, user_id: str, metadata: Mapping[str, Any]
    ) -> AuditEvent:
        return _identity_event(
            self._new_id, now, event_type, None, ("user", user_id), metadata, reason="bootstrap"
        )


# --- everything together -------------------------------------------------------------------


class IdentityServices:
    """The identity half of the server, as the HTTP layer and the composition root use it."""

    def __init__(
        self,
        *,
        store: Store,
        clock: ServerClock,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
        settings: ServerSettings,
        secret_files: SecretFiles | None = None,
        on_user_suspended: UserDisabledHook | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.roles = RoleDirectory(settings.auth)
        self.authenticator = Authenticator(store, clock, new_id, self.roles)
        self.tokens = TokenService(store, clock, new_id, random_bytes, settings, self.roles)
        self.users = UserService(
            store, clock, new_id, random_bytes, self.roles, on_user_suspended=on_user_suspended
        )
        self.audit = AuditQueries(store)
        self.bootstrapper = (
            None
            if secret_files is None
            else Bootstrapper(store, clock, new_id, random_bytes, secret_files)
        )

    def authenticate(self, authorization: str | None) -> Principal:
        """`adapters.http_api.auth.Authenticate`."""
        return self.authenticator.authenticate(authorization)

    def me(self, principal: Principal) -> Me:
        return Me(
            subject_id=principal.subject_id,
            subject_type=principal.subject_type,
            roles=principal.roles,
            groups=tuple(sorted(principal.groups)),
            token_id=principal.token_id,
        )

    def bootstrap(self, state_dir: Path, *, force: bool = False) -> BootstrapOutcome:
        if self.bootstrapper is None:
            raise RuntimeError("IdentityServices was built without secret_files")
        return self.bootstrapper.bootstrap(state_dir, force=force)

    def store_ready(self) -> bool:
        """Whether the store answers a trivial query (readiness)."""
        try:
            with self._store.read() as session:
                session.identity.ping()
        except Exception:
            log.warning("store readiness check failed", exc_info=True)
            return False
        return True
