"""The agent's error taxonomy: what is hard (exit now) and what is transient (retry).

The brief: authentication failures and invalid configuration (including a 4xx from the
server) are hard; connection refused, timeouts, DNS failures and 5xx are transient. A
malformed server answer is transient too: a proxy in the path may have garbled one reply.
The base class and configuration errors are shared with the server
(`domain.shared.errors`).
"""

from __future__ import annotations

from domain.shared.errors import DbwardError, Severity

# --- the dbward server --------------------------------------------------------------


class ServerError(DbwardError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        retryable = status >= 500 or status == 429
        self.severity = Severity.TRANSIENT if retryable else Severity.HARD

    @property
    def retryable(self) -> bool:
        return self.severity is Severity.TRANSIENT


class ServerUnauthorized(ServerError):
    """401: the agent token is wrong, expired or revoked."""


class ServerConflict(ServerError):
    """409: another agent won the claim, or the execution is no longer ours."""


class ServerNotFound(ServerError):
    """404: the job, execution or endpoint does not exist."""


def server_error_for(status: int, message: str, code: str | None = None) -> ServerError:
    """Build the most specific ServerError subclass for an HTTP status."""
    kind: type[ServerError] = {
        401: ServerUnauthorized,
        404: ServerNotFound,
        409: ServerConflict,
    }.get(status, ServerError)
    return kind(status, message, code)


class ServerUnreachable(DbwardError):
    """No HTTP answer at all: refused, reset, DNS failure or timeout."""

    severity = Severity.TRANSIENT


class MalformedServerResponse(DbwardError):
    """A 2xx answer whose body is not what the protocol says."""

    severity = Severity.TRANSIENT


# --- the target databases -----------------------------------------------------------


class DatabaseError(DbwardError):
    """A failure reported by a target database."""

    severity = Severity.TRANSIENT

    def __init__(self, message: str, *, connectivity: bool = False) -> None:
        super().__init__(message)
        #: True when the connection itself is gone, which feeds degraded mode.
        self.connectivity = connectivity


class DatabaseAuthError(DatabaseError):
    """Wrong database credentials (SQLSTATE 28P01/28000, MySQL 1045)."""

    severity = Severity.HARD


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached (refused, DNS, timeout, server gone)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, connectivity=True)


class QueryTimeout(DatabaseError):
    """The statement ran past its timeout and was stopped."""


class QueryCancelled(DatabaseError):
    """The statement was cancelled (server cancel, lease loss or forced shutdown)."""


class TokenVerificationError(DbwardError):
    """An execution token (or the server's public key) failed verification.

    Hard at startup (a bad public key exits); during a job it is reported as a failed
    result, never an exit.
    """

    severity = Severity.HARD

    def __init__(self, message: str) -> None:
        super().__init__(f"token verification failed: {message}")
        self.reason = message


class MigrationError(DatabaseError):
    """A migration failed before applying anything."""


class PartialMigrationError(MigrationError):
    """A migration run stopped after applying some versions; `result_data` lists them."""

    def __init__(self, message: str, result_data: str) -> None:
        super().__init__(message)
        self.result_data = result_data


class AgentFatalError(DbwardError):
    """A runtime condition that must stop the agent (exit 1), such as a revoked token."""

    severity = Severity.HARD
