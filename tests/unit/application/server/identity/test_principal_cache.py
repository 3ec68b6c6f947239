"""The authentication cache: a resolved token is answered from memory for a few seconds,
and never after an identity write this process committed."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import pytest

from application.server.identity.authentication import Authenticator
from application.server.identity.principal_cache import (
    AUTH_CACHE_SECS,
    CachedPrincipal,
    PrincipalCache,
)
from application.server.identity.roles import RoleDirectory
from application.server.identity.tokens import TokenRequest
from application.server.ports.store import Store
from domain.server.api_tokens import SubjectType, TokenRecord
from domain.server.errors import Unauthenticated
from tests.fakes.clock import FakeClock
from tests.unit.application.server.identity.harness import Env, refused


class CountingStore:
    """The fake store, counting read sessions: a cache hit opens none."""

    def __init__(self, env: Env) -> None:
        self._store = env.store
        self.reads = 0

    def read(self) -> object:
        self.reads += 1
        return self._store.read()

    def write(self) -> object:
        return self._store.write()


@pytest.fixture
def env() -> Env:
    return Env()


def cached_authenticator(env: Env, cache: PrincipalCache) -> tuple[Authenticator, CountingStore]:
    store = CountingStore(env)
    authenticator = Authenticator(
        cast(Store, store),
        env.clock,
        lambda: "id-cache",
        RoleDirectory(env.settings.auth),
        cache=cache,
    )
    return authenticator, store


def bearer(raw: str) -> str:
    return f"Bearer {raw}"


class TestPrincipalCache:
    def test_an_entry_is_forgotten_after_the_ttl(self, env: Env) -> None:
        clock = FakeClock()
        cache = PrincipalCache(ttl_secs=5, monotonic=clock.monotonic)
        entry = CachedPrincipal(record=_record(env), principal=env.admin)
        cache.put("h", entry, cache.generation)
        clock.advance(4.9)
        assert cache.get("h") == entry
        clock.advance(0.1)
        assert cache.get("h") is None

    def test_clear_forgets_every_entry(self, env: Env) -> None:
        cache = PrincipalCache()
        cache.put("h", CachedPrincipal(_record(env), env.admin), cache.generation)
        cache.clear()
        assert cache.get("h") is None

    def test_an_answer_read_before_a_clear_is_not_kept(self, env: Env) -> None:
        cache = PrincipalCache()
        read_at = cache.generation
        cache.clear()  # an identity write committed while the store was being read
        cache.put("h", CachedPrincipal(_record(env), env.admin), read_at)
        assert cache.get("h") is None


class TestCachedAuthentication:
    def test_a_token_resolved_a_moment_ago_costs_no_store_read(self, env: Env) -> None:
        authenticator, store = cached_authenticator(env, PrincipalCache())
        raw = env.file("admin-token")
        first = authenticator.authenticate(bearer(raw))
        assert store.reads == 1
        assert authenticator.cached(bearer(raw)) == first
        assert authenticator.authenticate(bearer(raw)) == first
        assert store.reads == 1

    def test_an_unknown_token_is_never_answered_from_memory(self, env: Env) -> None:
        authenticator, _ = cached_authenticator(env, PrincipalCache())
        raw = env.file("admin-token")
        assert authenticator.cached(bearer(raw)) is None
        assert authenticator.cached(None) is None
        assert authenticator.cached("Basic abc") is None

    def test_a_token_that_expires_while_cached_is_refused(self, env: Env) -> None:
        authenticator, _ = cached_authenticator(
            env, PrincipalCache(ttl_secs=3600, monotonic=env.clock.monotonic)
        )
        issued = env.tokens.create(
            env.admin,
            TokenRequest(
                "admin", SubjectType.USER, expires_at=env.clock.now() + timedelta(seconds=1)
            ),
        )
        authenticator.authenticate(bearer(issued.token))
        env.clock.advance(2)
        assert authenticator.cached(bearer(issued.token)) is None
        refused(
            lambda: authenticator.authenticate(bearer(issued.token)),
            Unauthenticated,
            "token_expired",
        )

    def test_a_revocation_is_seen_once_the_cache_is_cleared(self, env: Env) -> None:
        cache = PrincipalCache(monotonic=env.clock.monotonic)
        authenticator, _ = cached_authenticator(env, cache)
        issued = env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        authenticator.authenticate(bearer(issued.token))
        env.tokens.revoke(env.admin, issued.record.id)
        cache.clear()  # what the SQL store does after committing the revocation
        refused(
            lambda: authenticator.authenticate(bearer(issued.token)),
            Unauthenticated,
            "token_revoked",
        )

    def test_a_revocation_made_elsewhere_is_seen_within_the_ttl(self, env: Env) -> None:
        authenticator, _ = cached_authenticator(env, PrincipalCache(monotonic=env.clock.monotonic))
        issued = env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER))
        authenticator.authenticate(bearer(issued.token))
        env.tokens.revoke(env.admin, issued.record.id)  # no clear: another replica did it
        env.clock.advance(AUTH_CACHE_SECS)
        refused(
            lambda: authenticator.authenticate(bearer(issued.token)),
            Unauthenticated,
            "token_revoked",
        )


def _record(env: Env) -> TokenRecord:
    return env.tokens.create(env.admin, TokenRequest("admin", SubjectType.USER)).record
