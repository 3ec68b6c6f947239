"""`GET /metrics`: the Prometheus text, for bearer tokens with `metrics.view`
(docs/operations.md "Metrics"). The route function is sync: rendering reads the store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from adapters.http_api.auth import current_principal
from adapters.http_api.routing import api_router
from application.server.metrics_view import ViewMetrics
from domain.server.rbac import Principal

__all__ = ["build_metrics_router"]


def build_metrics_router(view: ViewMetrics) -> APIRouter:
    router = api_router()

    @router.get("/metrics")
    def metrics(principal: Annotated[Principal, Depends(current_principal)]) -> Response:
        body, content_type = view.render(principal)
        return Response(content=body, media_type=content_type)

    return router
