"""Errors the server's domain raises, each carrying the HTTP status it stands for.

The status is plain data, not an HTTP library type: the domain stays free of frameworks,
and the API layer maps every error with one generic handler into dbward 0.2's body
`{"error": <message>, "code": <code>}` (docs/server.md §8.1). Subclasses fix the status and
a default code; callers pass a more specific code where the protocol names one
(`token_expired`, `no_roles_resolved`, `insufficient_scope`, ...).
"""

from __future__ import annotations


class ServerDomainError(Exception):
    """Base of every server-side domain error: a stable `code`, a human `message`, a status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, {self.message!r})"


class _FixedStatusError(ServerDomainError):
    """A family with one HTTP status and a default code; callers may name a finer code."""

    status_code: int = 500
    default_code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(code if code is not None else self.default_code, message, self.status_code)


class Validation(_FixedStatusError):
    """400: the input is malformed or breaks a rule the caller can fix."""

    status_code = 400
    default_code = "validation.failed"


class Unauthenticated(_FixedStatusError):
    """401: no usable credential. The message stays vague on purpose (no token oracle)."""

    status_code = 401
    default_code = "unauthorized"

    def __init__(self, message: str = "authentication failed", *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class Forbidden(_FixedStatusError):
    """403: authenticated, but this principal may not do this."""

    status_code = 403
    default_code = "forbidden"


class NotFound(_FixedStatusError):
    """404: no such resource (or one the caller may not know exists).

    The code names the resource, `<resource>.not_found` (`request.not_found`,
    `group.not_found`, `user.not_found`…), so a client can tell a missing request from a
    missing group without parsing the message; this is the one place that code is made.
    """

    status_code = 404
    default_code = "request.not_found"

    def __init__(self, message: str, *, resource: str = "request") -> None:
        super().__init__(message, code=f"{resource}.not_found")


class Conflict(_FixedStatusError):
    """409: the resource is in a state that does not allow this (lost races included)."""

    status_code = 409
    default_code = "conflict"


class Gone(_FixedStatusError):
    """410: it existed, but its time is over (an expired request, an expired result)."""

    status_code = 410
    default_code = "gone"


class ConfigOnly(_FixedStatusError):
    """405: the resource is managed in server.toml; the API only reads it."""

    status_code = 405
    default_code = "config_only"


class PayloadTooLarge(_FixedStatusError):
    """413: a body or a result larger than the configured cap."""

    status_code = 413
    default_code = "payload_too_large"


class RateLimited(_FixedStatusError):
    """429: the caller has too much of this in flight; retry when some of it finished."""

    status_code = 429
    default_code = "rate_limited"


class ServiceUnavailable(_FixedStatusError):
    """503: the server is draining for shutdown and takes no new work."""

    status_code = 503
    default_code = "server_shutting_down"
