"""How routes join the app: every router is built by `api_router`, and `add_routes` puts its
routes straight into the app's own route list.

FastAPI's `include_router` keeps each included router behind a wrapper that, on every
request, sums the router's route versions and walks its routes one by one, setting and
restoring scope keys around each match: 1.5 to 2.6 ms of server CPU per request over the
four calls of a request's round (docs/performance.md, change 28). A route added to the app
itself is matched by a plain loop. What `include_router` would have merged in from the
app is given to the routers when they are built instead: the documented error responses
(`ERROR_RESPONSES`) are the only such setting, and no router has a prefix of its own
beyond the one its routes' paths already carry, dependencies, or lifespan handlers, so the
routes (and the OpenAPI document) are the same either way.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

__all__ = ["ERROR_RESPONSES", "ErrorBody", "add_routes", "api_router"]


class ErrorBody(BaseModel):
    """The error envelope (docs/server.md §8.1), as /openapi.json documents every 4xx."""

    error: str
    code: str
    hint: str | None


#: Every route's 4xx, documented once: FastAPI would otherwise show its own 422 `detail`
#: list, which this API never answers (a validation failure is a 400 envelope).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request was refused."}
}


def api_router(**settings: Any) -> APIRouter:
    """A router whose routes document the error envelope (`settings` go to `APIRouter`)."""
    return APIRouter(responses=ERROR_RESPONSES, **settings)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """`router`'s routes, in order, after the app's own."""
    if router.dependencies or router.on_startup or router.on_shutdown:
        raise ValueError("add_routes takes plain routers: no dependencies or lifespan handlers")
    app.router.routes.extend(router.routes)
