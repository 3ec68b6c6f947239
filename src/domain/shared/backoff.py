"""Backoff policies, pure: randomness and time come in as arguments.

Startup follows the brief's exact doubling (1 s, 2 s, 4 s, 8 s, 15 s cap) so operators can
predict it. At runtime many agents may lose the same server at once, so the delays use full
jitter (AWS architecture blog, "Exponential Backoff and Jitter") to keep them from polling
in lockstep when it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RUNTIME_BACKOFF_CAP_SECS = 15.0


@dataclass(frozen=True)
class ExponentialBackoff:
    """Delays that double from `initial_secs` up to `max_secs`."""

    initial_secs: float
    max_secs: float

    def delay(self, attempt: int) -> float:
        """Delay after the `attempt`-th failure (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        # Stop doubling once past the cap so large attempt counts cannot overflow.
        delay = self.initial_secs
        for _ in range(attempt - 1):
            if delay >= self.max_secs:
                break
            delay *= 2
        return min(delay, self.max_secs)


@dataclass(frozen=True)
class FullJitterBackoff:
    """`uniform(0, min(cap, base * 2**(attempt-1)))`: spreads retries of many agents."""

    base_secs: float
    cap_secs: float = RUNTIME_BACKOFF_CAP_SECS

    def ceiling(self, attempt: int) -> float:
        return ExponentialBackoff(self.base_secs, self.cap_secs).delay(attempt)

    def delay(self, attempt: int, uniform: Callable[[float, float], float]) -> float:
        return uniform(0.0, self.ceiling(attempt))
