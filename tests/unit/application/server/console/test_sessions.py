"""Console sessions (docs/console.md §2) over the identity fakes."""

from __future__ import annotations

import itertools

import pytest

from application.server.console.sessions import (
    ABSOLUTE_TIMEOUT,
    IDLE_TIMEOUT,
    SESSION_TOKEN_NAME,
    ConsoleSessions,
    SessionExpired,
)
from application.server.identity.tokens import TokenRequest
from application.server.ports.store import AuditFilters
from domain.server.api_tokens import SubjectType
from domain.server.errors import Unauthenticated
from tests.unit.application.server.identity.harness import Env


def _sessions(env: Env) -> ConsoleSessions:
    ids = itertools.count(1)
    rand = itertools.count(1000)
    return ConsoleSessions(
        store=env.store,  # type: ignore[arg-type]
        cipher=env.cipher,
        clock=env.clock,
        authenticate=env.authenticator.authenticate,
        new_id=lambda: f"session-{next(ids):04d}",
        random_bytes=lambda n: next(rand).to_bytes(n, "big"),
    )


def test_signing_in_mints_a_session_token_capped_at_the_signing_tokens_roles() -> None:
    env = Env()
    _, token = env.user("ann", "requester", "approver")
    narrowed = env.tokens.create(
        env.login(token),
        TokenRequest(subject_id="ann", subject_type=SubjectType.USER, scope_ceiling=("requester",)),
    ).token
    sessions = _sessions(env)

    session = sessions.sign_in(narrowed)

    assert session.principal.subject_id == "ann"
    assert session.principal.role_names == frozenset({"requester"})
    assert session.cookie is not None and narrowed not in session.cookie
    with env.store.read() as tx:  # type: ignore[attr-defined]
        record = tx.identity.get_token(session.token_id)
    assert record.name == SESSION_TOKEN_NAME
    assert record.expires_at == env.clock.now() + ABSOLUTE_TIMEOUT


def test_a_cookie_resumes_its_session_and_refreshes_only_after_a_minute() -> None:
    env = Env()
    _, token = env.user("ann", "requester")
    sessions = _sessions(env)
    cookie = sessions.sign_in(token).cookie

    same = sessions.resume(cookie)
    assert same.principal.subject_id == "ann" and same.cookie is None
    env.clock.advance(90)
    refreshed = sessions.resume(cookie)
    assert refreshed.cookie is not None and refreshed.cookie != cookie
    assert refreshed.csrf_token == same.csrf_token


def test_an_idle_session_and_a_session_past_its_absolute_end_are_over() -> None:
    env = Env()
    _, token = env.user("ann", "requester")
    sessions = _sessions(env)
    cookie = sessions.sign_in(token).cookie
    env.clock.advance(IDLE_TIMEOUT.total_seconds() + 1)
    with pytest.raises(SessionExpired):
        sessions.resume(cookie)

    busy = sessions.sign_in(token).cookie
    elapsed = 0.0
    while elapsed + 600 < ABSOLUTE_TIMEOUT.total_seconds():
        env.clock.advance(600)
        elapsed += 600
        busy = sessions.resume(busy).cookie or busy
    env.clock.advance(ABSOLUTE_TIMEOUT.total_seconds() - elapsed + 1)
    with pytest.raises(Unauthenticated):
        sessions.resume(busy)


def test_a_forged_or_tampered_cookie_opens_nothing() -> None:
    env = Env()
    _, token = env.user("ann", "requester")
    sessions = _sessions(env)
    cookie = sessions.sign_in(token).cookie
    assert cookie is not None
    for bad in (None, "", "not-base64!", cookie[:-4] + "AAAA", token):
        with pytest.raises(SessionExpired):
            sessions.resume(bad)


def test_signing_out_revokes_the_session_token_so_the_cookie_is_dead() -> None:
    env = Env()
    _, token = env.user("ann", "requester")
    sessions = _sessions(env)
    session = sessions.sign_in(token)

    sessions.sign_out(session)

    with pytest.raises(Unauthenticated):
        sessions.resume(session.cookie)
    assert env.login(token).subject_id == "ann"  # the token that signed in still works
    events = env.audit.list(env.admin, AuditFilters(event_type="token.revoked"))
    assert [e.resource_id for e in events] == [session.token_id]


def test_agent_tokens_cannot_sign_in_and_a_suspended_user_is_signed_out() -> None:
    env = Env()
    agent_token = env.tokens.create(
        env.admin,
        TokenRequest(subject_id="agent-1", subject_type=SubjectType.AGENT),
    ).token
    sessions = _sessions(env)
    with pytest.raises(Unauthenticated):
        sessions.sign_in(agent_token)

    _, token = env.user("ann", "requester")
    cookie = sessions.sign_in(token).cookie
    env.users.suspend(env.admin, "ann")
    with pytest.raises(Unauthenticated):
        sessions.resume(cookie)


def test_the_csrf_token_must_match_the_sessions_own() -> None:
    env = Env()
    _, token = env.user("ann", "requester")
    sessions = _sessions(env)
    session = sessions.sign_in(token)
    assert sessions.csrf_matches(session, session.csrf_token)
    assert not sessions.csrf_matches(session, None)
    assert not sessions.csrf_matches(session, session.csrf_token + "x")
