"""Console sessions: an API token signs in, a sealed cookie carries the session
(docs/console.md §2).

Why this shape: sessions must work across server replicas sharing the store, with no new
table. Signing in mints a dedicated, short-lived *session token* in the token store (named
`console session`, its scope ceiling the roles of the token that signed in, expiring at the
session's absolute end). The cookie holds that token sealed with the store's
key-encryption key (AES-GCM, bound to the name `console-session`), so every replica opens
it, and nobody can read or forge it. Each page authenticates the session token through the
same `authenticate` as the API, so the console authorizes exactly as the API does and a
suspended user or a revoked token is refused at once. Signing out revokes the session token
in the store: a copied cookie is dead on every replica from then on.

Idle expiry rides in the sealed cookie (`last_active`, refreshed at most once a minute);
absolute expiry is both in the cookie and on the session token itself.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from application.server.identity.events import identity_event, token_created_event
from application.server.identity.issuing import issue_token
from application.server.ports.services import SecretCipher, SecretUnreadable, ServerClock
from application.server.ports.store import Store
from domain.server.api_tokens import SubjectType
from domain.server.errors import Unauthenticated
from domain.server.rbac import Principal

__all__ = [
    "ABSOLUTE_TIMEOUT",
    "IDLE_TIMEOUT",
    "SESSION_TOKEN_NAME",
    "ConsoleSession",
    "ConsoleSessions",
    "SessionExpired",
]

#: A session unused this long is over (sign in again).
IDLE_TIMEOUT = timedelta(minutes=30)
#: A session is over this long after sign-in, however busy.
ABSOLUTE_TIMEOUT = timedelta(hours=12)
#: The `name` of the session tokens in the token store (`dbward token list` shows them).
SESSION_TOKEN_NAME = "console session"  # noqa: S105 - a token name, not a secret
#: The associated data the cookie is sealed under: a sealed store secret never opens as one.
_SEAL_NAME = "console-session"
#: `last_active` is rewritten at most this often (each rewrite is a new Set-Cookie).
_REFRESH_EVERY = timedelta(minutes=1)
_CSRF_BYTES = 32

Authenticate = Callable[[str | None], Principal]


class SessionExpired(Unauthenticated):
    """The cookie is missing, unreadable, idle too long or past its absolute end."""

    def __init__(self, message: str = "sign in to the console") -> None:
        super().__init__(message, code="console.session_expired")


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in console caller.

    `cookie` is the value to send back (a refreshed `last_active`), or None when the
    request's cookie is still fresh.
    """

    principal: Principal
    token_id: str
    csrf_token: str
    expires_at: datetime
    cookie: str | None


@dataclass(frozen=True)
class _Sealed:
    token: str
    token_id: str
    csrf: str
    started: int
    last_active: int


class ConsoleSessions:
    def __init__(
        self,
        *,
        store: Store,
        cipher: SecretCipher,
        clock: ServerClock,
        authenticate: Authenticate,
        new_id: Callable[[], str],
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._clock = clock
        self._authenticate = authenticate
        self._new_id = new_id
        self._random_bytes = random_bytes

    def sign_in(self, api_token: str) -> ConsoleSession:
        """Checks `api_token` like any API call, then starts a session for its user.

        Agent tokens cannot sign in: the console is for people.
        """
        principal = self._authenticate(f"Bearer {api_token.strip()}")
        if principal.subject_type is not SubjectType.USER:
            raise Unauthenticated("agent tokens cannot sign in to the console")
        now = self._clock.now()
        expires_at = now + ABSOLUTE_TIMEOUT
        with self._store.write() as session:
            raw, record = issue_token(
                random_bytes=self._random_bytes,
                new_id=self._new_id,
                subject_type=SubjectType.USER,
                subject_id=principal.subject_id,
                # Never more than the token that signed in may do.
                ceiling=tuple(sorted(principal.role_names)),
                name=SESSION_TOKEN_NAME,
                kind=None,
                expires_at=expires_at,
                now=now,
            )
            session.identity.add_token(record)
            session.audit.append(token_created_event(self._new_id, now, principal, record))
        sealed = _Sealed(
            token=raw,
            token_id=record.id,
            csrf=base64.urlsafe_b64encode(self._random_bytes(_CSRF_BYTES)).decode(),
            started=int(now.timestamp()),
            last_active=int(now.timestamp()),
        )
        return self._session(sealed, now, fresh_cookie=True)

    def resume(self, cookie: str | None) -> ConsoleSession:
        """The session a request's cookie carries; raises `SessionExpired` or the API's own
        `Unauthenticated` (revoked session token, suspended user)."""
        sealed = self._open(cookie)
        now = self._clock.now()
        stamp = int(now.timestamp())
        if stamp - sealed.last_active > IDLE_TIMEOUT.total_seconds():
            raise SessionExpired("the console session was idle too long: sign in again")
        if stamp - sealed.started > ABSOLUTE_TIMEOUT.total_seconds():
            raise SessionExpired("the console session ended: sign in again")
        refresh = stamp - sealed.last_active >= _REFRESH_EVERY.total_seconds()
        if refresh:
            sealed = _Sealed(
                sealed.token, sealed.token_id, sealed.csrf, sealed.started, last_active=stamp
            )
        return self._session(sealed, now, fresh_cookie=refresh)

    def sign_out(self, session: ConsoleSession) -> None:
        """Revokes the session token in the store, so the cookie opens nothing anywhere."""
        now = self._clock.now()
        with self._store.write() as tx:
            if tx.identity.revoke_token(session.token_id, now):
                tx.audit.append(
                    identity_event(
                        self._new_id,
                        now,
                        "token.revoked",
                        session.principal,
                        ("token", session.token_id),
                        {
                            "revoked_by": session.principal.subject_id,
                            "subject_id": session.principal.subject_id,
                            "subject_type": SubjectType.USER.value,
                            "self_revoke": True,
                        },
                        reason="console sign-out",
                    )
                )

    @staticmethod
    def csrf_matches(session: ConsoleSession, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            session.csrf_token.encode(), presented.encode()
        )

    def _session(self, sealed: _Sealed, now: datetime, *, fresh_cookie: bool) -> ConsoleSession:
        principal = self._authenticate(f"Bearer {sealed.token}")
        started = datetime.fromtimestamp(sealed.started, tz=now.tzinfo)
        return ConsoleSession(
            principal=principal,
            token_id=sealed.token_id,
            csrf_token=sealed.csrf,
            expires_at=min(
                started + ABSOLUTE_TIMEOUT,
                datetime.fromtimestamp(sealed.last_active, tz=now.tzinfo) + IDLE_TIMEOUT,
            ),
            cookie=self._seal(sealed) if fresh_cookie else None,
        )

    def _seal(self, sealed: _Sealed) -> str:
        payload = json.dumps(
            {
                "t": sealed.token,
                "i": sealed.token_id,
                "c": sealed.csrf,
                "s": sealed.started,
                "a": sealed.last_active,
            }
        ).encode()
        return base64.urlsafe_b64encode(self._cipher.seal(_SEAL_NAME, payload)).decode()

    def _open(self, cookie: str | None) -> _Sealed:
        if not cookie:
            raise SessionExpired()
        try:
            data = json.loads(
                self._cipher.open(_SEAL_NAME, base64.urlsafe_b64decode(cookie.encode()))
            )
            return _Sealed(
                token=str(data["t"]),
                token_id=str(data["i"]),
                csrf=str(data["c"]),
                started=int(data["s"]),
                last_active=int(data["a"]),
            )
        except (SecretUnreadable, binascii.Error, ValueError, KeyError, TypeError):
            raise SessionExpired() from None
