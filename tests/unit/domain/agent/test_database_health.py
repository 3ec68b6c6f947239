"""Per-database health: degraded and recovered states."""

from __future__ import annotations

from domain.agent.database_health import DatabaseHealth, DatabaseState
from domain.shared.scopes import Scope

SCOPE = Scope("app", "production")


def test_database_health_starts_connecting_and_a_first_connect_is_not_a_recovery() -> None:
    health = DatabaseHealth(SCOPE)
    assert health.state is DatabaseState.CONNECTING
    assert not health.is_up
    assert health.mark_up() is False
    assert health.is_up


def test_database_health_reports_a_new_outage_once_and_keeps_its_start() -> None:
    health = DatabaseHealth(SCOPE)
    health.mark_up()
    assert health.mark_down("reset by peer", now=10.0) is True
    assert health.mark_down("still refused", now=12.0) is False
    assert health.state is DatabaseState.DOWN
    assert health.down_since == 10.0
    assert health.last_error == "still refused"


def test_database_health_recovery_clears_the_outage() -> None:
    health = DatabaseHealth(SCOPE)
    health.mark_down("refused", now=1.0)
    health.record_failed_attempt("refused again")
    assert health.mark_up() is True
    assert (health.last_error, health.down_since, health.failed_attempts) == (None, None, 0)


def test_reconnect_is_due_once_per_interval_and_only_when_down() -> None:
    health = DatabaseHealth(SCOPE)
    health.mark_up()
    assert not health.reconnect_due(100.0, 1.0)
    health.mark_down("refused", now=100.0)
    assert health.reconnect_due(100.0, 1.0)  # never attempted yet
    health.record_attempt(100.0)
    assert not health.reconnect_due(100.5, 1.0)
    assert health.reconnect_due(101.0, 1.0)
    health.record_attempt(101.0)
    assert not health.reconnect_due(101.9, 1.0)
