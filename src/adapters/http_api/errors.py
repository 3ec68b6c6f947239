"""The error envelope of every API response: `{"error", "code", "hint"}` (docs/server.md §8.1).

Domain errors that carry their family's default code take dbward 0.2's shape
(docs/protocol.md §2, `map_error`): 409 `request.conflict` "conflict: <msg>" with the hint
"request may have been modified concurrently", 404 `<resource>.not_found` "not found: <msg>"
(`request.not_found`, `group.not_found`…, the code the `NotFound` names), 410
`request.gone` "gone: <msg>", 413 `payload.too_large`, 400 `validation.failed`
"validation: <msg>" with the message as hint. An error raised with a specific code
(`auth.token_expired`, `server_shutting_down`, `insufficient_scope`, …) keeps its code and
message as they are.

Malformed input never becomes a 500 or a traceback: FastAPI's validation errors become a
400 naming the field, a body that is not JSON (or nests too deeply, or holds an integer
with more digits than Python converts) a 400 saying so, an oversized body a 413 (also when
it was chunked), and any unexpected exception a 500 with the literal message "internal
server error" (details go to the log only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.server.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    ServerDomainError,
    Validation,
)

log = logging.getLogger("dbward.server.api")

CONFLICT_HINT = "request may have been modified concurrently"


def envelope(status: int, message: str, code: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "code": code, "hint": hint})


def validation_envelope(message: str) -> JSONResponse:
    """400 `validation.failed`, "validation: <msg>", hint = msg (docs/protocol.md §2)."""
    return envelope(400, f"validation: {message}", "validation.failed", message)


def domain_envelope(exc: ServerDomainError) -> JSONResponse:
    """A domain error's response: the protocol's shape for default codes, else as raised."""
    if isinstance(exc, Forbidden) and not getattr(exc, "public", False):
        # The reason stays in the log: the caller learns only that it is not allowed.
        log.info("forbidden: %s", exc.message)
        return envelope(403, "forbidden", exc.code, "check your role permissions")
    if isinstance(exc, Validation) and exc.code == Validation.default_code:
        return validation_envelope(exc.message)
    if isinstance(exc, Conflict) and exc.code == Conflict.default_code:
        return envelope(409, f"conflict: {exc.message}", "request.conflict", CONFLICT_HINT)
    if isinstance(exc, NotFound):
        return envelope(404, f"not found: {exc.message}", exc.code)
    if isinstance(exc, Gone) and exc.code == Gone.default_code:
        return envelope(410, f"gone: {exc.message}", "request.gone")
    if isinstance(exc, PayloadTooLarge) and exc.code == PayloadTooLarge.default_code:
        return envelope(413, exc.message, "payload.too_large")
    return envelope(exc.status, exc.message, exc.code)


def _describe_validation(exc: RequestValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors()[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        kind = error.get("type", "")
        if kind == "json_invalid":
            return "request body is not valid JSON"
        problems.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def _unparsable_body(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a JSON body ("There was an error parsing the body")."""
    if isinstance(cause, RecursionError):
        return "request body is nested too deeply"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return "request body holds an integer with too many digits"
    if isinstance(cause, UnicodeDecodeError):
        return "request body is not valid UTF-8"
    return "request body could not be parsed"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServerDomainError)
    async def domain_error(_: Request, exc: ServerDomainError) -> JSONResponse:
        return domain_envelope(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_envelope(_describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: Any = exc.detail
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI wraps whatever broke while it read the body (a RecursionError from
            # deep nesting, the int digit limit, …) into a bare 400: say which it was.
            return validation_envelope(_unparsable_body(exc.__cause__))
        if exc.status_code == 400:
            return validation_envelope(str(detail))
        if exc.status_code == 413:
            return envelope(413, str(detail), "payload.too_large")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return envelope(exc.status_code, str(detail), code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return envelope(500, "internal server error", "internal_error")
