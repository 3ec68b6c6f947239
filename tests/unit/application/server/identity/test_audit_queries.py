"""The audit API: filtered, paged listing and chain verification, behind `audit.read`."""

from __future__ import annotations

from dataclasses import replace

from application.server.ports.store import AuditFilters
from domain.server.errors import Forbidden, Validation
from tests.unit.application.server.identity.harness import Env, refused


class TestAudit:
    def test_list_filters_and_limits(self, env: Env) -> None:
        for i in range(5):
            env.user(f"u{i}", "requester")
        events = env.audit.list(env.admin, AuditFilters(event_type="user.created"), limit=3)
        assert [e.resource_id for e in events] == ["u4", "u3", "u2"]
        page2 = env.audit.list(
            env.admin, AuditFilters(event_type="user.created"), limit=3, offset=3
        )
        assert [e.resource_id for e in page2] == ["u1", "u0", "agent"]
        assert len(env.audit.list(env.admin, AuditFilters(), limit=10_000)) <= 200
        refused(lambda: env.audit.list(env.admin, AuditFilters(), limit=0), Validation)
        refused(lambda: env.audit.list(env.admin, AuditFilters(), offset=-1), Validation)

    def test_audit_read_is_admin_and_operator(self, env: Env) -> None:
        operator, _ = env.user("op", "operator")
        requester, _ = env.user("req", "requester")
        assert env.integrity.verify(operator).valid
        refused(lambda: env.audit.list(requester, AuditFilters()), Forbidden)
        refused(lambda: env.integrity.verify(requester), Forbidden)

    def test_verify_names_a_tampered_event(self, env: Env) -> None:
        events = env.store.state.events
        victim = events[2]
        events[2] = replace(victim, actor_id="mallory")
        verdict = env.integrity.verify(env.admin)
        assert (verdict.valid, verdict.first_broken_id) == (False, victim.id)
