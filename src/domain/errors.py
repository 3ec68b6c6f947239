"""The agent's error taxonomy: what is hard (exit now) and what is transient (retry).

The brief: authentication failures and invalid configuration (including a 4xx from the
server) are hard; connection refused, timeouts, DNS failures and 5xx are transient. A
malformed server answer is transient too: a proxy in the path may have garbled one reply.
"""

from __future__ import annotations

from enum import Enum


class Severity(Enum):
    HARD = "hard"
    TRANSIENT = "transient"


class AgentError(Exception):
    """Base of every error the agent reasons about."""

    severity: Severity = Severity.TRANSIENT

    @property
    def is_hard(self) -> bool:
        return self.severity is Severity.HARD


class ConfigError(AgentError):
    """Invalid configuration. The message names the file, the key and the fix."""

    severity = Severity.HARD


# --- the dbward server --------------------------------------------------------------


class ServerError(AgentError):
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


class Unauthorized(ServerError):
    """401: the agent token is wrong, expired or revoked."""


class Conflict(ServerError):
    """409: another agent won the claim, or the execution is no longer ours."""


class NotFound(ServerError):
    """404: the job, execution or endpoint does not exist."""


def server_error_for(status: int, message: str, code: str | None = None) -> ServerError:
    """Build the most specific ServerError subclass for an HTTP status."""
    kind: type[ServerError] = {401: Unauthorized, 404: NotFound, 409: Conflict}.get(
        status, ServerError
    )
    return kind(status, message, code)


class ServerUnreachable(AgentError):
    """No HTTP answer at all: refused, reset, DNS failure or timeout."""

    severity = Severity.TRANSIENT


class MalformedServerResponse(AgentError):
    """A 2xx answer whose body is not what the protocol says."""

    severity = Severity.TRANSIENT


# --- the target databases -----------------------------------------------------------


class DatabaseError(AgentError):
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


class TokenVerificationError(AgentError):
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


class AgentFatalError(AgentError):
    """A runtime condition that must stop the agent (exit 1), such as a revoked token."""

    severity = Severity.HARD
