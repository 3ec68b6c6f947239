"""The identity use cases over an in-memory store (tests/fakes/identity_store.py).

`Env` wires each use case by hand, as the composition root does, with a fake clock that
jumps, and bootstraps, so every test starts with the bootstrap admin signed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from adapters.crypto.ed25519_signer import Ed25519Signer
from application.server.audit_maintenance import AuditMaintenance
from application.server.identity.audit_integrity import AuditIntegrity
from application.server.identity.audit_queries import AuditQueries
from application.server.identity.authentication import Authenticator
from application.server.identity.bootstrap import BootstrapAction, Bootstrapper
from application.server.identity.roles import RoleDirectory
from application.server.identity.tokens import TokenService
from application.server.identity.users import NewUser, UserService
from application.server.ports.store import Store
from application.server.settings import ServerSettings
from domain.server.errors import ServerDomainError
from domain.server.rbac import Principal
from tests.fakes.clock import FakeClock
from tests.fakes.identity_store import FakeStore, MemorySecretFiles
from tests.server_keys import kek_cipher

STATE = Path("/state")


class Env:
    """The use cases over fakes, bootstrapped, with helpers to get principals."""

    def __init__(self, settings: ServerSettings | None = None, **kwargs: Any) -> None:
        self.store = FakeStore()
        self.clock = FakeClock()
        self.files = MemorySecretFiles()
        ids = itertools.count(1)
        rand = itertools.count(1)
        self.cancelled: list[tuple[str, str]] = []
        self.settings = settings or ServerSettings.for_state_dir(STATE)

        def new_id() -> str:
            return f"id-{next(ids):04d}"

        def random_bytes(n: int) -> bytes:
            return next(rand).to_bytes(n, "big")

        store = cast(Store, self.store)  # no `work`: identity never uses it
        roles = RoleDirectory(self.settings.auth)
        self.authenticator = Authenticator(store, self.clock, new_id, roles)
        self.tokens = TokenService(store, self.clock, new_id, random_bytes, self.settings, roles)
        self.users = UserService(
            store,
            self.clock,
            new_id,
            random_bytes,
            roles,
            on_user_disabled=kwargs.get("hook", self._hook),
        )
        self.audit = AuditQueries(store)
        self.signer = Ed25519Signer(bytes(range(32)))
        self.integrity = AuditIntegrity(store=store, signer=self.signer)
        self.maintenance = AuditMaintenance(
            store=store, settings=self.settings, signer=self.signer, new_id=new_id
        )
        self.cipher = kek_cipher()
        self.bootstrapper = Bootstrapper(
            store, self.clock, new_id, random_bytes, self.files, self.cipher
        )
        outcome = self.bootstrapper.bootstrap(STATE)
        assert outcome.action is BootstrapAction.CREATED
        self.admin = self.login(self.file("admin-token"))

    def _hook(self, user_id: str, reason: str) -> list[str]:
        self.cancelled.append((user_id, reason))
        return [f"req-of-{user_id}"]

    def file(self, name: str) -> str:
        text = self.files.read_secret(STATE / name)
        assert text is not None
        return text

    def login(self, raw: str) -> Principal:
        return self.authenticator.authenticate(f"Bearer {raw}")

    def user(
        self, user_id: str, *roles: str, groups: tuple[str, ...] = ()
    ) -> tuple[Principal, str]:
        issued = self.users.create(self.admin, NewUser(user_id, roles, groups))
        return self.login(issued.token), issued.token


def refused(
    call: Callable[[], object], kind: type[ServerDomainError], code: str | None = None
) -> ServerDomainError:
    with pytest.raises(kind) as caught:
        call()
    if code is not None:
        assert caught.value.code == code, caught.value
    return caught.value
