"""The whole server store in memory: identity, work and audit in one transaction.

`write()` rolls every state back when its block raises, as the SQL store's transaction
does, so a use case that fails half-way leaves nothing behind, and a state change and its
audit event are seen together or not at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from domain.server.audit import AuditEvent
from tests.fakes.identity_store import (
    FakeAuditRepository,
    FakeIdentityRepository,
    FakeSecretRepository,
    IdentityState,
)
from tests.fakes.work_store import FakeWorkRepository, WorkState


class FakeServerSession:
    def __init__(self, identity: IdentityState, work: WorkState, *, read_only: bool) -> None:
        self.identity = FakeIdentityRepository(identity)
        self.work = FakeWorkRepository(work)
        self.audit = FakeAuditRepository(identity, read_only=read_only)
        self.secrets = FakeSecretRepository(identity)


class FakeServerStore:
    def __init__(self) -> None:
        self.identity_state = IdentityState()
        self.work_state = WorkState()
        self.rollbacks = 0

    @contextmanager
    def write(self) -> Iterator[FakeServerSession]:
        saved_identity = copy.deepcopy(self.identity_state)
        saved_work = copy.deepcopy(self.work_state)
        try:
            yield FakeServerSession(self.identity_state, self.work_state, read_only=False)
        except BaseException:
            self.identity_state.__dict__.update(saved_identity.__dict__)
            self.work_state.__dict__.update(saved_work.__dict__)
            self.rollbacks += 1
            raise

    @contextmanager
    def read(self) -> Iterator[FakeServerSession]:
        yield FakeServerSession(self.identity_state, self.work_state, read_only=True)

    # test helpers
    def events(self, event_type: str | None = None) -> list[AuditEvent]:
        return [
            e
            for e in self.identity_state.events
            if event_type is None or e.event_type == event_type
        ]
