"""Metrics ports that remember every call, for tests that check what was counted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from application.agent.metrics import JobOutcome
from domain.server.request_lifecycle import RequestStatus
from domain.server.webhooks import DeliveryStatus
from domain.shared.operations import Operation


@dataclass
class RecordingServerMetrics:
    created: list[tuple[RequestStatus, Operation]] = field(default_factory=list)
    transitions: list[RequestStatus] = field(default_factory=list)
    claims: list[tuple[Operation, float]] = field(default_factory=list)
    lease_expiries: int = 0
    api: list[tuple[str, str, int]] = field(default_factory=list)
    webhook_attempts: list[DeliveryStatus] = field(default_factory=list)

    def request_created(self, status: RequestStatus, operation: Operation) -> None:
        self.created.append((status, operation))

    def requests_transitioned(self, statuses: Sequence[RequestStatus]) -> None:
        self.transitions.extend(statuses)

    def job_claimed(self, operation: Operation, waited_secs: float) -> None:
        self.claims.append((operation, waited_secs))

    def leases_expired(self, count: int) -> None:
        self.lease_expiries += count

    def api_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        self.api.append((method, route, status_code))

    def webhook_attempted(self, status: DeliveryStatus) -> None:
        self.webhook_attempts.append(status)


@dataclass
class RecordingAgentMetrics:
    jobs: list[tuple[JobOutcome, int]] = field(default_factory=list)
    heartbeat_failures: int = 0
    polls: list[bool] = field(default_factory=list)

    def job_finished(self, outcome: JobOutcome, seconds: float, result_bytes: int) -> None:
        self.jobs.append((outcome, result_bytes))

    def heartbeat_failed(self) -> None:
        self.heartbeat_failures += 1

    def poll_finished(self, *, ok: bool) -> None:
        self.polls.append(ok)
