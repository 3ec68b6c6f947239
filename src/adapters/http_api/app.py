"""The server's FastAPI application: routers, error envelope, version header, body limits,
API metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI

from adapters.http_api.auth import Authenticate, AuthenticateCached, no_cache
from adapters.http_api.errors import install_error_handlers
from adapters.http_api.middleware import ApiMetrics, BodyLimit, VersionHeader
from adapters.http_api.routing import ERROR_RESPONSES, add_routes
from application.server.ports.metrics import NO_METRICS, ServerMetrics
from application.server.ports.store import StoreCalls
from application.server.store_calls import IN_THREADS

#: Default body limit for API routes; agent result and schema-sync routes get more.
DEFAULT_BODY_LIMIT = 1024 * 1024


def create_app(
    *,
    routers: Sequence[APIRouter],
    authenticate: Authenticate,
    version: str,
    authenticate_cached: AuthenticateCached = no_cache,
    body_limit_for: Callable[[str], int] = lambda _path: DEFAULT_BODY_LIMIT,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    metrics: ServerMetrics = NO_METRICS,
    store_calls: StoreCalls = IN_THREADS,
) -> FastAPI:
    app = FastAPI(
        title="dbward",
        version=version,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.authenticate = authenticate
    app.state.authenticate_cached = authenticate_cached
    app.state.store_calls = store_calls
    install_error_handlers(app)
    for router in routers:
        add_routes(app, router)
    # Outermost last: the version header is added even to a 413 from the body limit, and
    # the metrics see that 413 too.
    app.add_middleware(BodyLimit, limit_for=body_limit_for)
    app.add_middleware(ApiMetrics, metrics=metrics)
    app.add_middleware(VersionHeader, version=version)
    return app
