"""The whole server store in memory: identity, work and audit in one transaction.

`write()` rolls every state back when its block raises, as the SQL store's transaction
does, so a use case that fails half-way leaves nothing behind, and a state change and its
audit event are seen together or not at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from application.server.ports.store import AuditListener
from domain.server.audit import AuditEvent
from tests.fakes.identity_store import (
    FakeAuditRepository,
    FakeIdentityRepository,
    FakeSecretRepository,
    IdentityState,
)
from tests.fakes.webhook_store import FakeWebhookDeliveryRepository, WebhookState
from tests.fakes.work_store import FakeWorkRepository, WorkState


class _ListenedAudit(FakeAuditRepository):
    """The audit repository that tells the store's listener, as the SQL store's does."""

    def __init__(
        self, session: FakeServerSession, state: IdentityState, listener: AuditListener
    ) -> None:
        super().__init__(state)
        self._session = session
        self._listener = listener

    def append(self, event: AuditEvent) -> AuditEvent:
        chained = super().append(event)
        self._listener.on_audit(self._session, chained)
        return chained


class FakeServerSession:
    def __init__(
        self,
        identity: IdentityState,
        work: WorkState,
        webhooks: WebhookState,
        *,
        read_only: bool,
        listener: AuditListener | None = None,
    ) -> None:
        self.identity = FakeIdentityRepository(identity)
        self.work = FakeWorkRepository(work)
        self.audit: FakeAuditRepository = (
            FakeAuditRepository(identity, read_only=read_only)
            if listener is None or read_only
            else _ListenedAudit(self, identity, listener)
        )
        self.secrets = FakeSecretRepository(identity)
        self.webhooks = FakeWebhookDeliveryRepository(webhooks)


class FakeServerStore:
    def __init__(self, listener: AuditListener | None = None) -> None:
        self.identity_state = IdentityState()
        self.work_state = WorkState()
        self.webhook_state = WebhookState()
        self.listener = listener
        self.rollbacks = 0

    @contextmanager
    def write(self) -> Iterator[FakeServerSession]:
        states = (self.identity_state, self.work_state, self.webhook_state)
        saved = copy.deepcopy(states)
        try:
            yield FakeServerSession(*states, read_only=False, listener=self.listener)
        except BaseException:
            for state, copied in zip(states, saved, strict=True):
                state.__dict__.update(copied.__dict__)
            self.rollbacks += 1
            raise

    @contextmanager
    def read(self) -> Iterator[FakeServerSession]:
        yield FakeServerSession(
            self.identity_state, self.work_state, self.webhook_state, read_only=True
        )

    # test helpers
    def events(self, event_type: str | None = None) -> list[AuditEvent]:
        return [
            e
            for e in self.identity_state.events
            if event_type is None or e.event_type == event_type
        ]
