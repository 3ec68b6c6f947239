"""The web console for approvers and requesters, served under `/ui` (docs/console.md)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from adapters.http_api.console.rendering import STATIC_DIR
from adapters.http_api.console.router import ConsoleUseCases, build_console_router
from adapters.http_api.console.security import SecurityHeaders
from adapters.http_api.routing import add_routes

__all__ = ["ConsoleUseCases", "mount_console"]


def mount_console(app: FastAPI, use_cases: ConsoleUseCases) -> None:
    """Adds the console's pages, its own static files (no CDN) and its security headers."""
    add_routes(app, build_console_router(use_cases))
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_middleware(SecurityHeaders)
