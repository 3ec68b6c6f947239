"""The agent's metrics port: the services say what happened, an adapter counts it.

The services never import a metrics library; the composition root hands them the
Prometheus adapter when `metrics_listen` is set (docs/operations.md "Metrics"), else
`NO_AGENT_METRICS`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from application.agent.database_registry import DatabaseRegistry

__all__ = ["NO_AGENT_METRICS", "AgentMetrics", "JobOutcome", "NoAgentMetrics", "database_up"]


class JobOutcome(StrEnum):
    """How a claimed job ended, as the agent saw it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Executed (or failed), but the result never reached the server.
    UNDELIVERED = "undelivered"


class AgentMetrics(Protocol):
    def job_finished(self, outcome: JobOutcome, seconds: float, result_bytes: int) -> None:
        """A claimed job ended; `result_bytes` is the size of the result data sent."""
        ...

    def heartbeat_failed(self) -> None:
        """A heartbeat got no answer, or learnt that the lease was lost."""
        ...

    def poll_finished(self, *, ok: bool) -> None:
        """A poll was answered (`ok`) or failed; polls cut short by shutdown are not."""
        ...


class NoAgentMetrics:
    """Counts nothing: the agent without `metrics_listen`, and tests that do not look."""

    def job_finished(self, outcome: JobOutcome, seconds: float, result_bytes: int) -> None:
        pass

    def heartbeat_failed(self) -> None:
        pass

    def poll_finished(self, *, ok: bool) -> None:
        pass


NO_AGENT_METRICS: AgentMetrics = NoAgentMetrics()


def database_up(registry: DatabaseRegistry) -> dict[str, bool]:
    """Each configured database (`db/env`) and whether it is usable now."""
    healthy = set(registry.healthy_scopes())
    return {str(scope): scope in healthy for scope in registry.scopes}
