"""Backoff policies: exponential growth, caps and full jitter."""

from __future__ import annotations

import pytest

from domain.shared.backoff import ExponentialBackoff, FullJitterBackoff


def test_exponential_backoff_doubles_from_one_second_to_a_fifteen_second_cap() -> None:
    backoff = ExponentialBackoff(initial_secs=1.0, max_secs=15.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 15, 15]
    assert backoff.delay(10_000) == 15


def test_exponential_backoff_attempts_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        ExponentialBackoff(1.0, 15.0).delay(0)


def test_full_jitter_draws_between_zero_and_a_ceiling_capped_at_fifteen_seconds() -> None:
    backoff = FullJitterBackoff(base_secs=1.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [1, 2, 4, 8, 15, 15]
    assert backoff.ceiling(500) == 15
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high / 2

    assert backoff.delay(3, uniform) == 2.0
    assert draws == [(0.0, 4.0)]
