"""`GET /api/results` (docs/server.md §1.8, §8.2): the results the caller may read.

A router of its own beside the request routes: the result content itself is served under
`/api/requests/{id}/result/…` (`routes_requests`).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response

from adapters.http_api.auth import current_principal
from adapters.http_api.input_checks import MAX_OFFSET
from adapters.http_api.routing import api_router
from application.server.ports.work.executions import ListedResult
from application.server.requests.result_list import (
    DEFAULT_RESULTS_PAGE,
    MAX_RESULTS_PAGE,
    ListResults,
)
from domain.server.rbac import Principal
from domain.shared.timestamps import format_timestamp

__all__ = ["build_result_router"]


def _listed(item: ListedResult) -> dict[str, Any]:
    summary, request = item.summary, item.request
    return {
        "request_id": request.id,
        "execution_id": summary.execution_id,
        "requester": request.requester,
        "database": request.database,
        "environment": request.environment,
        "operation": request.operation.value,
        "request_status": request.status.value,
        "success": summary.success,
        "rows_affected": summary.rows_affected,
        "truncated": summary.truncated,
        "stored_at": format_timestamp(summary.stored_at),
        "content_length": summary.content_length,
        "has_stored_content": summary.has_stored_content,
        "purged": summary.purged,
        "expires_at": None if summary.expires_at is None else format_timestamp(summary.expires_at),
    }


def build_result_router(list_results: ListResults) -> APIRouter:
    router = api_router()

    @router.get("/api/results")
    def results(
        principal: Annotated[Principal, Depends(current_principal)],
        limit: Annotated[int, Query(ge=1)] = DEFAULT_RESULTS_PAGE,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        database: str | None = None,
        environment: str | None = None,
    ) -> Response:
        rows = list_results.list(
            principal, limit=limit, offset=offset, database=database, environment=environment
        )
        body = {
            "results": [_listed(item) for item in rows],
            "limit": min(limit, MAX_RESULTS_PAGE),
            "offset": offset,
        }
        return Response(content=orjson.dumps(body), media_type="application/json")

    return router
