"""The dbward REST API as the `dbward` CLI uses it: tokens, users and `/api/me` (docs/server.md §8).

Every call is JSON with `Authorization: Bearer <token>`. Every failure leaves this module as
one exception type, `ApiError(status, code, message, hint)`, so a command only has to print
it and pick an exit code:

* an HTTP status >= 400 -> the server's error envelope `{"error", "code", "hint"}` (§8.1);
  a body that is not the envelope (a proxy's HTML page, FastAPI's `{"detail": …}`) still
  gives a readable message and a code derived from the status,
* no answer at all (refused, reset, DNS, TLS, timeout) -> code `"network"`, naming the URL,
* a 2xx body that is not the JSON object the endpoint promises -> code `"malformed_response"`.

Redirects are not followed: a token must never be replayed to a host it was not configured
for, and an `http://` URL answered by a redirect to `https://` is a config mistake worth naming.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson

from adapters.wire.urls import path_segment

DEFAULT_TIMEOUT_SECS = 30.0
CONNECT_TIMEOUT_SECS = 10.0
#: The server holds a result stream up to 300 s; a little more so its own 204 arrives first.
RESULT_STREAM_TIMEOUT_SECS = 330.0
#: How much of a non-JSON error body is worth carrying in a message.
_ERROR_BODY_PREVIEW = 200

#: The code an error gets when the server's body does not carry one (docs/server.md §8.1 names).
_CODE_BY_STATUS: Mapping[int, str] = {
    400: "validation",
    401: "unauthorized",
    402: "plan_limit",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    422: "validation",
    429: "rate_limited",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Page:
    """One page of a listing: its items, the server's total count and the page's offset."""

    items: list[JsonObject]
    total: int | None
    offset: int


class ApiError(Exception):
    """A failed API call: HTTP status (None when no answer came), error code, message, hint."""

    def __init__(
        self, status: int | None, code: str, message: str, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint

    def __repr__(self) -> str:
        return f"ApiError(status={self.status!r}, code={self.code!r}, message={self.message!r})"


def _code_for_status(status: int) -> str:
    if status in _CODE_BY_STATUS:
        return _CODE_BY_STATUS[status]
    return "server_error" if status >= 500 else "http_error"


def _detail_message(detail: object) -> str | None:
    """FastAPI's own errors: `{"detail": "Not Found"}` or a list of validation problems."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts: list[str] = []
        for item in detail:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                location = item.get("loc")
                where = (
                    ".".join(str(part) for part in location if part != "body")
                    if isinstance(location, list)
                    else ""
                )
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        return "; ".join(parts) or None
    return None


def error_from_response(response: httpx.Response) -> ApiError:
    """Map an error answer (status >= 400) to ApiError, whatever its body looks like."""
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        message = body.get("error")
        if not isinstance(message, str):
            message = _detail_message(body.get("detail"))
        if isinstance(message, str):
            code = body.get("code")
            hint = body.get("hint")
            return ApiError(
                status,
                code if isinstance(code, str) and code else _code_for_status(status),
                message,
                hint if isinstance(hint, str) and hint else None,
            )
    text = response.content.decode("utf-8", errors="replace").strip()
    if len(text) > _ERROR_BODY_PREVIEW:
        text = text[:_ERROR_BODY_PREVIEW] + "…"
    reason = f"HTTP {status}" + (f" {response.reason_phrase}" if response.reason_phrase else "")
    return ApiError(status, _code_for_status(status), f"{reason}: {text}" if text else reason)


class ApiClient:
    """A thin, typed wrapper over the dbward REST API; one `httpx.Client` per instance.

    Methods return the decoded JSON objects as the server sends them (docs/server.md §4.5, §8.2);
    rendering them is the CLI's business.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECS,
        user_agent: str = "dbward-cli",
        channel: str | None = None,
    ) -> None:
        """`channel` names the client surface (`mcp`, docs/mcp.md) on every call, so the
        server audits it and refuses what that surface does not offer."""
        self._base_url = base_url.rstrip("/")
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        if channel is not None:
            headers["X-Dbward-Channel"] = channel
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECS)),
            follow_redirects=False,
            headers=headers,
        )

    def __repr__(self) -> str:
        # Never show the token: it lives in the client's headers only.
        return f"ApiClient({self._base_url!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- identity -----------------------------------------------------------------------

    def me(self) -> JsonObject:
        """`GET /api/me` → `{subject_id, subject_type, roles:[…], groups}`."""
        return self._object("GET", "/api/me")

    # --- tokens (docs/server.md §4.5) ----------------------------------------------------------

    def create_token(
        self,
        subject_id: str,
        subject_type: str,
        name: str | None = None,
        scope_roles: Sequence[str] | None = None,
        expires_at: str | None = None,
    ) -> JsonObject:
        """`POST /api/tokens`; the response carries the plaintext token, once.

        `scope_roles=None` leaves the scope ceiling out (null): for an agent that is the
        unrestricted `agent-default`, for a user the server derives it from the user's roles.
        """
        body: JsonObject = {"subject_id": subject_id, "subject_type": subject_type}
        if name is not None:
            body["name"] = name
        if scope_roles is not None:
            body["scope_ceiling"] = {"roles": list(scope_roles)}
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self._object("POST", "/api/tokens", body=body)

    def list_tokens(
        self,
        subject: str | None = None,
        status: str | None = None,
        type: str | None = None,  # the CLI flag and the query parameter are both "type"
    ) -> list[JsonObject]:
        """`GET /api/tokens`, filtered by subject, status and subject type.

        The filters go to the server as query parameters and are applied again here, so
        the answer is right whether or not the server honours them.
        """
        params = {
            key: value
            for key, value in (("subject", subject), ("status", status), ("type", type))
            if value is not None
        }
        listing = self._object("GET", "/api/tokens", params=params)
        tokens = _object_list(listing, "tokens", "GET /api/tokens")
        return [
            token
            for token in tokens
            if (subject is None or token.get("subject_id") == subject)
            and (status is None or token.get("status") == status)
            and (type is None or token.get("subject_type") == type)
        ]

    def revoke_token(self, token_id: str) -> JsonObject:
        """`DELETE /api/tokens/{id}` → `{id, revoked_at}`."""
        return self._object("DELETE", f"/api/tokens/{path_segment(token_id)}")

    def inspect_token(self, token_id: str) -> JsonObject:
        """`GET /api/tokens/{id}/inspect` → ceiling, resolved and effective roles, status."""
        return self._object("GET", f"/api/tokens/{path_segment(token_id)}/inspect")

    # --- users (docs/server.md §8.2) -----------------------------------------------------------

    def create_user(
        self, user_id: str, roles: Sequence[str] = (), groups: Sequence[str] = ()
    ) -> JsonObject:
        """`POST /api/users` → 201 `{id, token, token_prefix, roles, groups}` (initial token)."""
        body = {"id": user_id, "roles": list(roles), "groups": list(groups)}
        return self._object("POST", "/api/users", body=body)

    def list_users(self) -> list[JsonObject]:
        """`GET /api/users`: accepts `{"users": [...]}` or a bare list."""
        return _object_list(self._json("GET", "/api/users"), "users", "GET /api/users")

    def get_user(self, user_id: str) -> JsonObject:
        return self._object("GET", self._user_path(user_id))

    def update_user(
        self,
        user_id: str,
        roles: Sequence[str] | None = None,
        add_roles: Sequence[str] | None = None,
        rm_roles: Sequence[str] | None = None,
        add_groups: Sequence[str] | None = None,
        rm_groups: Sequence[str] | None = None,
    ) -> JsonObject:
        """`PATCH /api/users/{id}`; only the given fields are sent (`roles` replaces the set)."""
        changes = {
            "roles": roles,
            "add_roles": add_roles,
            "rm_roles": rm_roles,
            "add_groups": add_groups,
            "rm_groups": rm_groups,
        }
        body = {key: list(value) for key, value in changes.items() if value is not None}
        return self._object("PATCH", self._user_path(user_id), body=body)

    def suspend_user(self, user_id: str) -> JsonObject:
        return self._object("POST", f"{self._user_path(user_id)}/suspend")

    def activate_user(self, user_id: str) -> JsonObject:
        return self._object("POST", f"{self._user_path(user_id)}/activate")

    def delete_user(self, user_id: str) -> JsonObject:
        """`DELETE /api/users/{id}`: soft delete (tokens revoked, memberships dropped)."""
        return self._object("DELETE", self._user_path(user_id))

    def reissue_initial_token(self, user_id: str) -> JsonObject:
        """`POST /api/users/{id}/reissue-initial-token`: revokes the old initial token."""
        return self._object("POST", f"{self._user_path(user_id)}/reissue-initial-token")

    # --- audit (docs/server.md §6.4-§6.6) -------------------------------------------------------

    def audit_events(self, filters: Mapping[str, str]) -> list[JsonObject]:
        """`GET /api/audit/events` with the given query filters, newest first."""
        listing = self._object("GET", "/api/audit/events", params=filters)
        return _object_list(listing, "events", "GET /api/audit/events")

    def audit_head(self) -> JsonObject:
        """`GET /api/audit/head` → the newest event, signed; `anchor` is the value to keep."""
        return self._object("GET", "/api/audit/head")

    def audit_verify(self, anchor: str | None = None) -> JsonObject:
        """`GET /api/audit/verify[?anchor=…]` → `{total_events, first_broken_id, valid, …}`."""
        params = None if anchor is None else {"anchor": anchor}
        return self._object("GET", "/api/audit/verify", params=params)

    # --- plumbing -------------------------------------------------------------------------

    @staticmethod
    def _user_path(user_id: str) -> str:
        return f"/api/users/{path_segment(user_id)}"

    def _object(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | None = None,
        params: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """A call whose answer must be a JSON object; an empty 2xx body counts as `{}`."""
        data = self._json(method, path, body=body, params=params)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ApiError(
                None,
                "malformed_response",
                f"{method} {path}: expected a JSON object, got {type(data).__name__}",
            )
        return data

    def _json(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = f"{self._base_url}{path}"
        try:
            response = self._client.request(
                method,
                url,
                params=dict(params) if params else None,
                content=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=httpx.USE_CLIENT_DEFAULT
                if timeout is None
                else httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_SECS),
            )
        except httpx.TimeoutException as exc:
            raise ApiError(
                None, "network", f"timed out waiting for the dbward server at {url}"
            ) from exc
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise ApiError(
                None, "network", f"cannot reach the dbward server at {url}: {detail}"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        if response.is_redirect:
            location = response.headers.get("location", "?")
            raise ApiError(
                response.status_code,
                "redirect",
                f"{method} {url} was redirected to {location}; not following it with a token",
                "check the server URL (https:// instead of http://?)",
            )
        if not response.content.strip():
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                response.status_code,
                "malformed_response",
                f"{method} {url}: the server's answer is not JSON",
            ) from exc

    # --- operations: agents, databases, groups, health (docs/server.md §8.2) ---------------

    def list_agents(self) -> list[JsonObject]:
        """`GET /api/agents` → one entry per agent identity: status, scopes, degraded scopes."""
        return _object_list(self._json("GET", "/api/agents"), "agents", "GET /api/agents")

    def list_databases(self) -> list[JsonObject]:
        """`GET /api/databases` → configured database/environment pairs and their agents."""
        listing = self._json("GET", "/api/databases")
        return _object_list(listing, "databases", "GET /api/databases")

    def list_groups(self) -> list[JsonObject]:
        """`GET /api/groups` → `{name, roles, members}` for each configured group."""
        return _object_list(self._json("GET", "/api/groups"), "groups", "GET /api/groups")

    def get_group(self, name: str) -> JsonObject:
        return self._object("GET", f"/api/groups/{path_segment(name)}")

    def health(self) -> JsonObject:
        """`GET /health` (public) → `{status, version, min_agent_version}`."""
        return self._object("GET", "/health")

    def ready(self) -> JsonObject:
        """`GET /ready` (public) → `{status, checks}`; 503 while draining or degraded."""
        return self._object("GET", "/ready")

    # --- looking before submitting (docs/preflight.md) -----------------------------------

    def preflight(self, body: JsonObject) -> JsonObject:
        """`POST /api/preflight` → the judgement of the SQL, and its plan when asked for."""
        return self._object("POST", "/api/preflight", body=body)

    def policy_resolution(
        self, database: str, environment: str, operation: str | None = None
    ) -> JsonObject:
        """`GET /api/policy-resolution` → policies and workflow decisions for the scope."""
        params = {"database": database, "environment": environment}
        if operation is not None:
            params["operation"] = operation
        return self._object("GET", "/api/policy-resolution", params=params)

    def schema(
        self, database: str, environment: str, *, table: str | None = None, summary: bool = False
    ) -> JsonObject:
        """`GET /api/schemas/{db}`: the last reported snapshot (docs/preflight.md §7.4)."""
        params = {"environment": environment}
        if table is not None:
            params["table"] = table
        if summary:
            params["summary"] = "true"
        return self._object("GET", f"/api/schemas/{path_segment(database)}", params=params)

    # --- requests and results (docs/server.md §1.3-§1.8, §2.4) ----------------------------

    def create_request(self, body: JsonObject) -> JsonObject:
        """`POST /api/requests` → `{id, status, operation, approvers, idempotent, expires_at}`."""
        return self._object("POST", "/api/requests", body=body)

    def list_requests(self, filters: Mapping[str, str]) -> Page:
        """`GET /api/requests` with `limit`, `offset`, `status`, `user`, `pending_for_me`;
        the page carries the server's `total` (None when it sends none)."""
        listing = self._object("GET", "/api/requests", params=filters)
        items = _object_list(listing, "requests", "GET /api/requests")
        total, offset = listing.get("total"), listing.get("offset")
        return Page(
            items,
            total if isinstance(total, int) else None,
            offset if isinstance(offset, int) else int(filters.get("offset", 0)),
        )

    def get_request(self, request_id: str, wait_secs: int | None = None) -> JsonObject:
        """`GET /api/requests/{id}[?wait=N]`: with `wait`, answers when the status changes."""
        params = None if wait_secs is None else {"wait": str(wait_secs)}
        return self._object("GET", self._request_path(request_id), params=params)

    def approve_request(
        self, request_id: str, comment: str | None = None, selector: str | None = None
    ) -> JsonObject:
        """`POST /api/requests/{id}/approve` → step progress and the new status."""
        body = {k: v for k, v in (("comment", comment), ("selector", selector)) if v is not None}
        return self._object("POST", f"{self._request_path(request_id)}/approve", body=body)

    def reject_request(self, request_id: str, reason: str | None = None) -> JsonObject:
        body = {} if reason is None else {"reason": reason}
        return self._object("POST", f"{self._request_path(request_id)}/reject", body=body)

    def cancel_request(self, request_id: str, reason: str | None = None) -> JsonObject:
        body = {} if reason is None else {"reason": reason}
        return self._object("POST", f"{self._request_path(request_id)}/cancel", body=body)

    def resume_request(self, request_id: str, reason: str | None = None) -> JsonObject:
        """`POST /api/requests/{id}/resume` → `{id, status: dispatched, resumed_from, warning}`."""
        body = {} if reason is None else {"reason": reason}
        return self._object("POST", f"{self._request_path(request_id)}/resume", body=body)

    def request_result(self, request_id: str, execution_id: str | None = None) -> JsonObject:
        """`GET /api/requests/{id}/result/content[?execution_id=]`: the stored result."""
        params = None if execution_id is None else {"execution_id": execution_id}
        path = f"{self._request_path(request_id)}/result/content"
        return self._object("GET", path, params=params)

    def request_result_stream(self, request_id: str) -> JsonObject | None:
        """`GET /api/requests/{id}/result/stream`: the result, or None when the wait ran out.

        The server holds the call up to 300 s, so this one call gets a longer read timeout.
        """
        path = f"{self._request_path(request_id)}/result/stream"
        data = self._json("GET", path, timeout=RESULT_STREAM_TIMEOUT_SECS)
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ApiError(None, "malformed_response", f"GET {path}: expected a JSON object")
        return data

    def list_results(self, filters: Mapping[str, str]) -> list[JsonObject]:
        """`GET /api/results` (`limit`, `offset`, `database`, `environment`), newest first."""
        listing = self._object("GET", "/api/results", params=filters)
        return _object_list(listing, "results", "GET /api/results")

    @staticmethod
    def _request_path(request_id: str) -> str:
        return f"/api/requests/{path_segment(request_id)}"


def _object_list(data: Any, key: str, what: str) -> list[JsonObject]:
    """The list under `key` (or `data` itself when the server sends a bare list)."""
    items = data.get(key) if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ApiError(None, "malformed_response", f"{what}: expected a list of objects")
    return items
