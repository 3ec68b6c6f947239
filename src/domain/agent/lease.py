"""Leases: how long the agent may keep trying to hand in a result.

docs/agent.md §5 improvement 4: submission retries until the lease end plus a grace period, and
never for less than dbward 0.2's 300 s budget, because our server accepts a late
result as long as no newer execution of the request exists.
"""

from __future__ import annotations

from datetime import datetime

MIN_SUBMIT_BUDGET_SECS = 300.0
SUBMIT_GRACE_SECS = 60.0


def lease_seconds(lease_expires_at: datetime, claimed_at: datetime) -> float:
    """Length of the lease the server granted (heartbeats renew it by the same amount)."""
    return max((lease_expires_at - claimed_at).total_seconds(), 0.0)


def submit_budget_secs(lease_secs: float) -> float:
    return max(MIN_SUBMIT_BUDGET_SECS, lease_secs + SUBMIT_GRACE_SECS)
