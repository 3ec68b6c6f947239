"""`ServerPort` over HTTP with httpx: the dbward agent API (docs/protocol.md §2, §3).

One `httpx.Client` is shared by the poll loop, the heartbeat thread and the job workers,
so connections are kept alive instead of paying a TLS handshake per heartbeat. Every
failure leaves this module as a `domain.agent.errors` type, which is what lets the services
decide hard versus transient without knowing anything about HTTP:

* an HTTP status >= 400 -> `server_error_for(status, message, code)`,
* no answer at all (refused, reset, DNS, timeout) -> `ServerUnreachable`,
* a 2xx body that does not fit the protocol -> `MalformedServerResponse`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

import httpx
import orjson

from adapters.wire import agent_protocol as wire
from adapters.wire.urls import path_segment
from domain.agent.errors import MalformedServerResponse, ServerUnreachable, server_error_for
from domain.shared.errors import ConfigError
from domain.shared.jobs import (
    ClaimedJob,
    ClaimRequest,
    DryRunResult,
    ExplainOutcome,
    HeartbeatReply,
    JobResult,
    PollRequest,
    PollResponse,
    PreflightResult,
    SchemaReport,
)

CONNECT_TIMEOUT_SECS = 10.0
#: The dbward 0.2 agent's per-call budget (§2); write and pool waits share it.
READ_TIMEOUT_SECS = 30.0
#: How much longer than the requested hold a long-poll may take before we give up on it.
POLL_READ_MARGIN_SECS = 10.0
#: How much of a non-JSON error body is worth carrying in an exception message.
_ERROR_BODY_PREVIEW = 200
#: How much of a 2xx body that is not JSON is worth carrying in an exception message.
_MALFORMED_BODY_PREVIEW = 80

#: The header of a call with a body (never changed by httpx, so shared by every call).
_JSON_BODY_HEADERS = {"Content-Type": "application/json"}

_Message = TypeVar("_Message")


def _error_details(response: httpx.Response) -> tuple[str, str | None]:
    """Message and code of an error answer: the JSON envelope if any, else the raw text."""
    try:
        envelope = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        envelope = None
    if isinstance(envelope, dict) and isinstance(envelope.get("error"), str):
        code = envelope.get("code")
        return envelope["error"], code if isinstance(code, str) else None
    text = response.content.decode("utf-8", errors="replace").strip()
    if not text:
        return response.reason_phrase or f"HTTP {response.status_code}", None
    if len(text) > _ERROR_BODY_PREVIEW:
        text = text[:_ERROR_BODY_PREVIEW] + "…"
    return text, None


def _decoded(decode: Callable[[bytes], _Message], response: httpx.Response, what: str) -> _Message:
    """A 2xx body as its message, or a `MalformedServerResponse` naming `what` was wrong."""
    try:
        return decode(response.content)
    except wire.NotJsonError as exc:
        preview = response.content[:_MALFORMED_BODY_PREVIEW].decode("utf-8", errors="replace")
        raise MalformedServerResponse(f"{what}: body is not JSON ({exc}): {preview!r}") from None
    except wire.WrongShapeError as exc:
        first = exc.problems[0]
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        location = first.location or "(body)"
        raise MalformedServerResponse(f"{what}: field {location}: {first.message}{more}") from None


class HttpServerClient:
    """The agent's side of the dbward server API (implements `application.agent.ports.ServerPort`).

    The client says who is calling: the token on every call, and the configured
    `agent_id` in every poll and claim body, so our server keeps agents that share a token
    apart (docs/protocol.md §2.1). Thread-safe: httpx's connection pool may be used from
    several threads at once.
    """

    def __init__(
        self,
        base_url: str,
        agent_token: str,
        *,
        agent_build: str,
        agent_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._agent_id = agent_id
        self._base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(
            READ_TIMEOUT_SECS, connect=CONNECT_TIMEOUT_SECS, read=READ_TIMEOUT_SECS
        )
        self._client = httpx.Client(
            transport=transport,
            timeout=self._timeout,
            follow_redirects=False,
            headers={
                "Authorization": f"Bearer {agent_token}",
                "User-Agent": f"dbward-agent/{agent_build}",
            },
        )

    def __repr__(self) -> str:
        # Never show the token: the Authorization header lives on the client.
        return f"HttpServerClient({self._base_url!r})"

    # --- ServerPort ---------------------------------------------------------------------

    def fetch_public_key(self) -> str:
        response = self._call("GET", "/api/public-key")
        return _decoded(wire.decode_public_key, response, "public-key response")

    def poll(self, request: PollRequest) -> PollResponse:
        timeout = None
        if request.wait_ms > 0:
            # The server may hold the answer for wait_ms; only a silence past that is a fault.
            read = request.wait_ms / 1000 + POLL_READ_MARGIN_SECS
            timeout = httpx.Timeout(READ_TIMEOUT_SECS, connect=CONNECT_TIMEOUT_SECS, read=read)
        body = wire.encode_poll_request(dataclasses.replace(request, agent_id=self._agent_id))
        response = self._call("POST", "/api/agent/poll", body=body, timeout=timeout)
        return _decoded(wire.decode_poll_response, response, "poll response")

    def claim(self, request_id: str, lease_duration_secs: int) -> ClaimedJob:
        response = self._call(
            "POST",
            f"/api/agent/jobs/{path_segment(request_id)}/claim",
            body=wire.encode_claim_request(ClaimRequest(lease_duration_secs, self._agent_id)),
        )
        return _decoded(wire.decode_claimed_job, response, "claim response")

    def heartbeat(self, execution_id: str) -> HeartbeatReply:
        response = self._call("POST", f"/api/agent/jobs/{path_segment(execution_id)}/heartbeat")
        return _decoded(wire.decode_heartbeat_reply, response, "heartbeat response")

    def submit_result(self, execution_id: str, result: JobResult) -> None:
        # The answer names the request's new status; a 2xx is all the agent needs.
        self._call(
            "POST",
            f"/api/agent/jobs/{path_segment(execution_id)}/result",
            body=wire.encode_job_result(result),
        )

    def submit_schema(self, report: SchemaReport) -> None:
        # The server answers 200 with an empty body; nothing to parse.
        self._call("POST", "/api/agent/schema-sync", body=wire.encode_schema_report(report))

    def claim_dry_run(self, job_id: str) -> str:
        response = self._call("POST", f"/api/agent/dry-run/{path_segment(job_id)}/claim")
        return _decoded(wire.decode_dry_run_claim, response, "dry-run claim response")

    def submit_dry_run_result(self, job_id: str, claim_token: str, outcome: ExplainOutcome) -> None:
        self._call(
            "POST",
            f"/api/agent/dry-run/{path_segment(job_id)}/result",
            body=wire.encode_dry_run_result(DryRunResult(claim_token, outcome)),
        )

    def submit_preflight_result(
        self, job_id: str, claim_token: str, outcome: ExplainOutcome
    ) -> None:
        self._call(
            "POST",
            "/api/agent/preflight-result",
            body=wire.encode_preflight_result(PreflightResult(job_id, claim_token, outcome)),
        )

    def close(self) -> None:
        self._client.close()

    # --- plumbing -----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send one request (`body` is encoded JSON); return a 2xx response or raise a
        domain error."""
        what = f"{method} {path}"
        try:
            response = self._client.request(
                method,
                self._base_url + path,
                content=body,
                headers=None if body is None else _JSON_BODY_HEADERS,
                # The client's own timeout unless the call has one: httpx copies a passed one.
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.DecodingError as exc:
            raise MalformedServerResponse(f"{what}: undecodable body: {exc}") from exc
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            # The request itself cannot be sent (a header value with a newline or non-ASCII
            # characters): a configuration problem, never retried, and never echoed, since
            # the offending header is the one carrying the token.
            raise ConfigError(
                f"{what}: the request cannot be sent: an HTTP header is invalid "
                "(check [server].agent_token for whitespace or non-ASCII characters)"
            ) from None
        except httpx.RequestError as exc:
            reason = str(exc) or type(exc).__name__
            raise ServerUnreachable(f"{what}: {reason}") from exc
        status = response.status_code
        if status >= 400:
            message, code = _error_details(response)
            raise server_error_for(status, message, code)
        if not 200 <= status < 300:
            # Redirects are not followed: a server URL that redirects is misconfigured.
            location = response.headers.get("location", "")
            raise server_error_for(status, f"unexpected HTTP {status} redirect to {location!r}")
        return response
