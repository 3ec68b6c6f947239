"""The error envelope of every API response: `{"error", "code", "hint"}` (server.md §8.1).

Malformed input never becomes a 500 or a traceback: FastAPI's validation errors become a
400 naming the field, a body that is not JSON a 400, an oversized body a 413, and any
unexpected exception a 500 with the literal message "internal server error" (details go
to the log only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.server_errors import Forbidden, ServerDomainError

log = logging.getLogger("dbward.server.api")


def envelope(status: int, message: str, code: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "code": code, "hint": hint})


def _describe_validation(exc: RequestValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        kind = error.get("type", "")
        if kind == "json_invalid":
            return "request body is not valid JSON"
        problems.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServerDomainError)
    async def domain_error(_: Request, exc: ServerDomainError) -> JSONResponse:
        if isinstance(exc, Forbidden) and not getattr(exc, "public", False):
            # The reason stays in the log: the caller learns only that it is not allowed.
            log.info("forbidden: %s", exc.message)
            return envelope(403, "forbidden", exc.code, "check your role permissions")
        return envelope(exc.status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = _describe_validation(exc)
        return envelope(400, f"validation: {message}", "validation.failed", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: Any = exc.detail
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload.too_large"}.get(
            exc.status_code, "http_error"
        )
        return envelope(exc.status_code, str(detail), code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return envelope(500, "internal server error", "internal_error")
