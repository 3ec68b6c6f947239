"""The work store over SQLAlchemy Core, one module per aggregate of
`application.server.ports.work`; `SqlWorkRepository` is all of them on one connection."""

from __future__ import annotations

from adapters.store.work.agents import SqlAgentRepository
from adapters.store.work.approvals import SqlApprovalRepository
from adapters.store.work.databases import SqlDatabaseRepository
from adapters.store.work.executions import SqlExecutionRepository
from adapters.store.work.explain_jobs import SqlExplainJobRepository
from adapters.store.work.requests import SqlRequestRepository

__all__ = ["SqlWorkRepository"]


class SqlWorkRepository(
    SqlRequestRepository,
    SqlApprovalRepository,
    SqlExecutionRepository,
    SqlAgentRepository,
    SqlDatabaseRepository,
    SqlExplainJobRepository,
):
    """`WorkRepository`: every aggregate's statements, run in the session's one transaction."""
