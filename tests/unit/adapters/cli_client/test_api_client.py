"""ApiClient against httpx.MockTransport: paths, methods, bodies, headers, error mapping.

No network: a recording transport answers from a route table, so each test sees exactly
what would go on the wire (docs/server.md §4.5, §8.1, §8.2).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from adapters.cli_client.api_client import ApiClient, ApiError

TOKEN = "dbw_0123456789abcdef0123456789abcdef"
BASE = "https://dbward.example:8443/"


class RecordingServer:
    """Records every request; answers from `routes[(method, path)]`, else 404 envelope."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], tuple[int, bytes]] = {}

    def on(self, method: str, path: str, status: int = 200, body: object = None) -> None:
        self.routes[(method, path)] = (status, b"" if body is None else orjson.dumps(body))

    def on_raw(self, method: str, path: str, status: int, content: bytes) -> None:
        self.routes[(method, path)] = (status, content)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        status, content = self.routes.get(
            (request.method, request.url.path),
            (404, orjson.dumps({"error": "not found", "code": "not_found", "hint": None})),
        )
        return httpx.Response(status, content=content)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_body(self) -> Any:
        return orjson.loads(self.last.content)


@pytest.fixture
def server() -> RecordingServer:
    return RecordingServer()


@pytest.fixture
def client(server: RecordingServer) -> ApiClient:
    return ApiClient(BASE, TOKEN, transport=httpx.MockTransport(server))


def failing_client(exc: httpx.TransportError) -> ApiClient:
    def raise_(request: httpx.Request) -> httpx.Response:
        raise exc

    return ApiClient(BASE, TOKEN, transport=httpx.MockTransport(raise_))


# --- requests ---------------------------------------------------------------------------


def test_me_sends_the_bearer_token_and_returns_the_object(
    client: ApiClient, server: RecordingServer
) -> None:
    me = {"subject_id": "alice", "subject_type": "user", "roles": [], "groups": []}
    server.on("GET", "/api/me", body=me)

    assert client.me() == me
    request = server.last
    assert request.method == "GET"
    assert str(request.url) == "https://dbward.example:8443/api/me"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert "Content-Type" not in request.headers
    assert request.content == b""


def test_base_url_path_prefix_is_kept() -> None:
    server = RecordingServer()
    server.on("GET", "/dbward/api/me", body={"subject_id": "a"})
    client = ApiClient("https://h.example/dbward/", TOKEN, transport=httpx.MockTransport(server))
    client.me()
    assert str(server.last.url) == "https://h.example/dbward/api/me"


def test_create_agent_token_body(client: ApiClient, server: RecordingServer) -> None:
    created = {"id": "t1", "token": "dbw_" + "a" * 32, "prefix": "aaaaaaaa"}
    server.on("POST", "/api/tokens", 201, created)

    answer = client.create_token("prod-agent-1", "agent", scope_roles=["agent-default"])

    assert answer == created
    assert server.last.method == "POST"
    assert server.last.headers["Content-Type"] == "application/json"
    assert server.last_body() == {
        "subject_id": "prod-agent-1",
        "subject_type": "agent",
        "scope_ceiling": {"roles": ["agent-default"]},
    }


def test_create_token_sends_only_the_given_optional_fields(
    client: ApiClient, server: RecordingServer
) -> None:
    server.on("POST", "/api/tokens", 201, {"id": "t1", "token": "dbw_x"})

    client.create_token("alice", "user")
    assert server.last_body() == {"subject_id": "alice", "subject_type": "user"}

    client.create_token("alice", "user", "ci", ["requester"], "2030-01-01T00:00:00Z")
    assert server.last_body() == {
        "subject_id": "alice",
        "subject_type": "user",
        "name": "ci",
        "scope_ceiling": {"roles": ["requester"]},
        "expires_at": "2030-01-01T00:00:00Z",
    }


def test_list_tokens_sends_filters_and_applies_them(
    client: ApiClient, server: RecordingServer
) -> None:
    tokens = [
        {"id": "1", "subject_id": "alice", "subject_type": "user", "status": "active"},
        {"id": "2", "subject_id": "alice", "subject_type": "user", "status": "revoked"},
        {"id": "3", "subject_id": "bot", "subject_type": "agent", "status": "active"},
    ]
    server.on("GET", "/api/tokens", body={"tokens": tokens})

    assert client.list_tokens() == tokens
    assert server.last.url.params == httpx.QueryParams()

    # A server that ignores the query still yields the filtered answer.
    assert [t["id"] for t in client.list_tokens(subject="alice", status="active")] == ["1"]
    assert server.last.url.params == httpx.QueryParams({"subject": "alice", "status": "active"})
    assert [t["id"] for t in client.list_tokens(type="agent")] == ["3"]
    assert server.last.url.params == httpx.QueryParams({"type": "agent"})


def test_revoke_and_inspect_paths_quote_the_id(client: ApiClient, server: RecordingServer) -> None:
    server.on("DELETE", "/api/tokens/t-1", body={"id": "t-1", "revoked_at": "now"})
    assert client.revoke_token("t-1") == {"id": "t-1", "revoked_at": "now"}
    assert server.last.method == "DELETE"

    server.on("GET", "/api/tokens/t-1/inspect", body={"id": "t-1", "status": "active"})
    assert client.inspect_token("t-1")["status"] == "active"

    client_error = None
    try:
        client.inspect_token("../users")
    except ApiError as exc:
        client_error = exc
    assert server.last.url.raw_path == b"/api/tokens/..%2Fusers/inspect"
    assert client_error is not None and client_error.status == 404


def test_user_calls(client: ApiClient, server: RecordingServer) -> None:
    server.on("POST", "/api/users", 201, {"id": "bob", "token": "dbw_b", "roles": ["requester"]})
    assert client.create_user("bob", ["requester"], ["dba"])["token"] == "dbw_b"
    assert server.last_body() == {"id": "bob", "roles": ["requester"], "groups": ["dba"]}

    client.create_user("carol")
    assert server.last_body() == {"id": "carol", "roles": [], "groups": []}

    server.on("GET", "/api/users", body={"users": [{"id": "bob"}]})
    assert client.list_users() == [{"id": "bob"}]
    server.on("GET", "/api/users", body=[{"id": "bob"}])
    assert client.list_users() == [{"id": "bob"}]

    server.on("GET", "/api/users/bob", body={"id": "bob"})
    assert client.get_user("bob") == {"id": "bob"}

    server.on("PATCH", "/api/users/bob", body={"id": "bob"})
    client.update_user("bob", add_roles=["approver"], rm_groups=["dba"])
    assert server.last.method == "PATCH"
    assert server.last_body() == {"add_roles": ["approver"], "rm_groups": ["dba"]}
    client.update_user("bob", roles=["requester"], rm_roles=[], add_groups=["ops"])
    assert server.last_body() == {"roles": ["requester"], "rm_roles": [], "add_groups": ["ops"]}

    for action in ("suspend", "activate", "reissue-initial-token"):
        server.on("POST", f"/api/users/bob/{action}", body={"id": "bob"})
    assert client.suspend_user("bob") == {"id": "bob"}
    assert (server.last.method, server.last.url.path) == ("POST", "/api/users/bob/suspend")
    client.activate_user("bob")
    assert server.last.url.path == "/api/users/bob/activate"
    client.reissue_initial_token("bob")
    assert server.last.url.path == "/api/users/bob/reissue-initial-token"
    assert server.last.content == b""

    server.on("DELETE", "/api/users/bob", 204)
    assert client.delete_user("bob") == {}
    assert (server.last.method, server.last.url.path) == ("DELETE", "/api/users/bob")


def test_repr_hides_the_token(client: ApiClient) -> None:
    assert TOKEN not in repr(client)


# --- errors -----------------------------------------------------------------------------


def catch(call: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def test_error_envelope_is_mapped(client: ApiClient, server: RecordingServer) -> None:
    server.on(
        "POST",
        "/api/tokens",
        403,
        {"error": "forbidden", "code": "forbidden", "hint": "check your role permissions"},
    )
    error = catch(lambda: client.create_token("bob", "user"))
    assert (error.status, error.code, error.message, error.hint) == (
        403,
        "forbidden",
        "forbidden",
        "check your role permissions",
    )


def test_envelope_without_code_gets_one_from_the_status(
    client: ApiClient, server: RecordingServer
) -> None:
    server.on("GET", "/api/me", 401, {"error": "authentication failed"})
    error = catch(client.me)
    assert (error.status, error.code, error.message, error.hint) == (
        401,
        "unauthorized",
        "authentication failed",
        None,
    )


def test_non_json_error_body(client: ApiClient, server: RecordingServer) -> None:
    server.on_raw("GET", "/api/me", 502, b"<html><body>Bad Gateway</body></html>")
    error = catch(client.me)
    assert error.status == 502
    assert error.code == "bad_gateway"
    assert "502" in error.message and "Bad Gateway" in error.message

    server.on_raw("GET", "/api/me", 500, b"")
    error = catch(client.me)
    assert (error.code, error.message) == ("internal", "HTTP 500 Internal Server Error")

    server.on_raw("GET", "/api/me", 418, b"x" * 1000)
    error = catch(client.me)
    assert error.code == "http_error"
    assert len(error.message) < 300


def test_fastapi_detail_bodies(client: ApiClient, server: RecordingServer) -> None:
    server.on("GET", "/api/me", 404, {"detail": "Not Found"})
    error = catch(client.me)
    assert (error.code, error.message) == ("not_found", "Not Found")

    detail = [{"loc": ["body", "subject_id"], "msg": "Field required", "type": "missing"}]
    server.on("POST", "/api/tokens", 422, {"detail": detail})
    error = catch(lambda: client.create_token("a", "user"))
    assert (error.status, error.code, error.message) == (
        422,
        "validation",
        "subject_id: Field required",
    )


@pytest.mark.parametrize(
    ("exc", "fragment"),
    [
        (httpx.ConnectError("Connection refused"), "cannot reach the dbward server at"),
        (httpx.ReadTimeout("read timed out"), "timed out waiting for the dbward server at"),
        (httpx.RemoteProtocolError("peer closed"), "cannot reach the dbward server at"),
    ],
)
def test_network_errors_name_the_url(exc: httpx.TransportError, fragment: str) -> None:
    error = catch(failing_client(exc).me)
    assert error.status is None
    assert error.code == "network"
    assert fragment in error.message
    assert "https://dbward.example:8443/api/me" in error.message


def test_malformed_success_bodies(client: ApiClient, server: RecordingServer) -> None:
    server.on_raw("GET", "/api/me", 200, b"<html>login page</html>")
    assert catch(client.me).code == "malformed_response"

    server.on("GET", "/api/me", body=["not", "an", "object"])
    assert catch(client.me).code == "malformed_response"

    server.on("GET", "/api/tokens", body={"tokens": "nope"})
    assert catch(client.list_tokens).code == "malformed_response"


def test_redirects_are_not_followed(client: ApiClient, server: RecordingServer) -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        server.requests.append(request)
        return httpx.Response(301, headers={"Location": "https://evil.example/api/me"})

    client = ApiClient(BASE, TOKEN, transport=httpx.MockTransport(redirect))
    error = catch(client.me)
    assert error.code == "redirect"
    assert "https://evil.example/api/me" in error.message
    assert len(server.requests) == 1
