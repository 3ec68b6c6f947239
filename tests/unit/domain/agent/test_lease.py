"""Leases: the lease length and the result-submission budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.agent.lease import lease_seconds, submit_budget_secs


def test_submit_budget_is_at_least_the_reference_300_seconds() -> None:
    assert submit_budget_secs(60.0) == 300.0
    assert submit_budget_secs(0.0) == 300.0


def test_submit_budget_is_the_lease_plus_60_seconds_grace_for_long_leases() -> None:
    assert submit_budget_secs(600.0) == 660.0


def test_lease_seconds_is_the_granted_length_and_never_negative() -> None:
    claimed = datetime(2030, 1, 1, tzinfo=UTC)
    assert lease_seconds(claimed + timedelta(seconds=90), claimed) == 90.0
    assert lease_seconds(claimed - timedelta(seconds=5), claimed) == 0.0
