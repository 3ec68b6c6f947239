"""`GET /api/results`: the results the caller may read, newest first (docs/server.md §1.8).

The same access rule as the result routes (`result_access`), applied by the store, so a
page is full and `offset` pages through exactly what the caller could open one by one.
Results of databases no longer registered are not listed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.server.ports.work.executions import ListedResult
from application.server.requests.result_access import result_query
from application.server.settings import ServerSettings
from domain.server.errors import Validation
from domain.server.rbac import Permission, Principal, authorize_global
from domain.server.workflows import scope_name_problem

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["DEFAULT_RESULTS_PAGE", "MAX_RESULTS_PAGE", "ListResults"]

#: `GET /api/results` answers this many rows unless `limit` says otherwise...
DEFAULT_RESULTS_PAGE = 50
#: ... and never more than this many.
MAX_RESULTS_PAGE = 100


class ListResults:
    def __init__(self, *, store: Store, settings: ServerSettings) -> None:
        self._store = store
        self._settings = settings

    def list(
        self,
        principal: Principal,
        *,
        limit: int = DEFAULT_RESULTS_PAGE,
        offset: int = 0,
        database: str | None = None,
        environment: str | None = None,
    ) -> tuple[ListedResult, ...]:
        """Forbidden without `result.view` in any role; a malformed database or environment
        filter is a Validation error; otherwise the readable results."""
        authorize_global(principal, Permission.RESULT_VIEW)
        for kind, name in (("database", database), ("environment", environment)):
            problem = None if name is None else scope_name_problem(kind, name, wildcard=False)
            if problem is not None:
                raise Validation(problem)
        query = result_query(self._settings, principal, database=database, environment=environment)
        limit = min(max(limit, 1), MAX_RESULTS_PAGE)
        with self._store.read() as session:
            rows = session.work.list_results(query, limit=limit, offset=max(offset, 0))
        return tuple(rows)
