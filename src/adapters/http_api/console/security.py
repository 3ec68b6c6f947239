"""The console's web security: headers, cookies, CSRF and HTML error pages (docs/console.md §2).

Every console response carries a strict Content-Security-Policy (scripts and styles only
from the server itself, nothing inline, no framing), `nosniff` and `no-referrer`. The session
cookie is HttpOnly, SameSite=Strict, and Secure whenever the page was served over HTTPS.
Every form carries a CSRF token: the session's own (sealed inside its cookie) once signed
in, a random double-submit cookie on the sign-in form.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http_api.console.rendering import render
from application.server.console.sessions import ConsoleSession, ConsoleSessions
from domain.server.errors import Forbidden, NotFound, ServerDomainError, Unauthenticated

__all__ = [
    "CSRF_COOKIE",
    "SESSION_COOKIE",
    "ConsoleRoute",
    "CsrfRefused",
    "SecurityHeaders",
    "check_csrf",
    "clear_session_cookie",
    "login_csrf",
    "set_session_cookie",
]

SESSION_COOKIE = "dbward_session"
CSRF_COOKIE = "dbward_login_csrf"
PATH = "/ui"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Adds the console's security headers to every response under `/ui` (the API's JSON
    answers stay as they are)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PATH):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class CsrfRefused(Forbidden):
    """A form came without the CSRF token of the session (or of the sign-in page)."""

    public = True

    def __init__(self) -> None:
        super().__init__(
            "this form was not sent from your console page (missing or stale CSRF token): "
            "reload the page and try again",
            code="console.csrf_failed",
        )


def check_csrf(sessions: ConsoleSessions, session: ConsoleSession, presented: str | None) -> None:
    if not sessions.csrf_matches(session, presented):
        raise CsrfRefused()


def login_csrf(request: Request) -> tuple[str, bool]:
    """The sign-in form's token: the cookie's, or a new one (True: set the cookie)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing:
        return existing, False
    return secrets.token_urlsafe(32), True


def check_login_csrf(request: Request, presented: str | None) -> None:
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or presented is None or not hmac.compare_digest(expected, presented):
        raise CsrfRefused()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_login_csrf_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, value, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
    )


def set_session_cookie(response: Response, request: Request, session: ConsoleSession) -> None:
    if session.cookie is None:
        return
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        # The browser forgets it when the session would have ended anyway.
        expires=session.expires_at,
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=PATH, httponly=True, samesite="strict", secure=_secure(request)
    )


class ConsoleRoute(APIRoute):
    """Console routes answer HTML, not the API's JSON envelope.

    A domain error becomes an error page with the API's status (401 on a page read sends
    the browser to the sign-in page instead), and a refreshed session cookie is written to
    whatever the route answered.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except Unauthenticated:
                if request.method == "GET" and request.url.path != f"{PATH}/login":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    response = RedirectResponse(
                        f"{PATH}/login?next={quote(target, safe='')}", status_code=303
                    )
                    clear_session_cookie(response, request)
                    return response
                response = _error_page(request, 401, "sign in to the console first")
                clear_session_cookie(response, request)
                return response
            except NotFound as exc:
                return _error_page(request, 404, f"not found: {exc.message}")
            except ServerDomainError as exc:
                message = exc.message
                if isinstance(exc, Forbidden) and not getattr(exc, "public", False):
                    message = "forbidden: your roles do not allow this"
                return _error_page(request, exc.status, message)
            session: ConsoleSession | None = getattr(request.state, "console_session", None)
            if session is not None:
                set_session_cookie(response, request, session)
            return response

        return console_handler


def _error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"status": status, "message": message}, status=status)
