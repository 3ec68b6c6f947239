"""The work store's ports, one per aggregate: requests (with their approvals), executions
(with their results), agents, databases (with their schema snapshots) and EXPLAIN jobs.

Part of a `StoreSession` (`application.server.ports.store`): every method runs inside the
session's transaction, so a state change and the audit event the use case appends in the
same session commit together. Every status change is a conditional update
(`UPDATE … WHERE id = ? AND status IN (…)`) that returns whether it won: two replicas, two
agents or a sweep racing a result never both succeed, and nobody has to read first.
"""

from __future__ import annotations

from typing import Protocol

from application.server.ports.work.agents import AgentRepository
from application.server.ports.work.approvals import ApprovalRepository
from application.server.ports.work.databases import DatabaseRepository
from application.server.ports.work.executions import ExecutionRepository
from application.server.ports.work.explain_jobs import ExplainJobRepository
from application.server.ports.work.requests import RequestRepository

__all__ = ["WorkRepository"]


class WorkRepository(
    RequestRepository,
    ApprovalRepository,
    ExecutionRepository,
    AgentRepository,
    DatabaseRepository,
    ExplainJobRepository,
    Protocol,
):
    """Every aggregate of the work store in one session object (`StoreSession.work`).

    A use case may touch several aggregates in one transaction (a claim updates the
    request and inserts its execution), so the session hands them out together.
    """
