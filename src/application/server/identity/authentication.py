"""Authentication: the `Authorization: Bearer dbw_…` header becomes a `Principal`.

Our change to dbward 0.2, deliberate: `auth.failure` events are rate limited (a flood of
bad tokens must not turn every refusal into a write transaction); the suppressed count
rides on the next event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from application.server.audit_events import audit_event
from application.server.identity.principal_cache import CachedPrincipal, PrincipalCache
from application.server.identity.roles import RoleDirectory
from application.server.ports.services import ServerClock
from application.server.ports.store import Store
from domain.server import api_tokens
from domain.server.api_tokens import SubjectType, lookup_prefix, token_hash
from domain.server.errors import Forbidden, ServerDomainError, Unauthenticated
from domain.server.rbac import Principal, Role, apply_ceiling

__all__ = ["ANONYMOUS_ACTOR", "Authenticator", "Me"]

log = logging.getLogger("dbward.server.identity")

BEARER = "Bearer "
#: The audit actor of a refused call: whoever it was, they did not prove it.
ANONYMOUS_ACTOR = "anonymous"


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
    """`Authorization` header → `Principal` (docs/server.md §4.6); usable as `Authenticate`.

    Every refusal (401, or 403 from role resolution) is recorded as an `auth.failure`
    event in its own short transaction; recording never changes the answer: a failing
    audit write is logged and the refusal still goes out as it was.

    With a `PrincipalCache`, a token resolved in the last few seconds is answered from
    memory (`cached`), without a store read; see that module for when a change is seen.
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
        cache: PrincipalCache | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_id = new_id
        self._roles = roles
        self._budget = _FailureBudget(failure_events_per_second)
        self._touched: dict[str, datetime] = {}
        self._touch_lock = threading.Lock()
        self._cache = cache

    def __call__(self, authorization: str | None) -> Principal:
        return self.authenticate(authorization)

    def cached(self, authorization: str | None) -> Principal | None:
        """The caller from the cache, touching neither the store nor the disk; None when
        `authenticate` has to decide (not cached, expired, or a `last_seen_at` write due).
        Never raises: a refusal is `authenticate`'s, with its audit event."""
        if self._cache is None or authorization is None or not authorization.startswith(BEARER):
            return None
        raw = authorization[len(BEARER) :]
        if not api_tokens.is_well_formed(raw):
            return None
        hit = self._cache.get(token_hash(raw))
        if hit is None:
            return None
        now = self._clock.now()
        if hit.record.is_expired(now) or self._touch_due(hit.principal, now):
            return None
        return hit.principal

    def authenticate(self, authorization: str | None) -> Principal:
        hit = self.cached(authorization)
        if hit is not None:
            return hit
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
        # Read before the store: a write committed meanwhile makes `put` drop this answer.
        generation = 0 if self._cache is None else self._cache.generation
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
        principal = Principal(
            subject_id=record.subject_id,
            subject_type=record.subject_type,
            roles=effective,
            groups=frozenset(groups),
            token_id=record.id,
        )
        if self._cache is not None:
            self._cache.put(token_hash(raw), CachedPrincipal(record, principal), generation)
        return principal

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

    def _touch_due(self, principal: Principal, now: datetime) -> bool:
        if principal.is_agent:
            return False
        last = self._touched.get(principal.subject_id)
        return last is None or now - last >= self.TOUCH_INTERVAL

    def _touch(self, principal: Principal) -> None:
        now = self._clock.now()
        with self._touch_lock:
            if not self._touch_due(principal, now):
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

    @classmethod
    def of(cls, principal: Principal) -> Me:
        return cls(
            subject_id=principal.subject_id,
            subject_type=principal.subject_type,
            roles=principal.roles,
            groups=tuple(sorted(principal.groups)),
            token_id=principal.token_id,
        )
