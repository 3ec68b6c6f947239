"""HttpServerClient against httpx.MockTransport, plus the small system adapters.

No network: a scripted transport records each request and plays back one answer, so the
tests see exactly the method, path, headers, body and timeouts that would hit the wire.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from adapters.files.probes import FileProbes
from adapters.server_client.client import HttpServerClient
from adapters.system_clock import SystemClock
from domain.agent.errors import (
    MalformedServerResponse,
    ServerConflict,
    ServerError,
    ServerNotFound,
    ServerUnauthorized,
    ServerUnreachable,
    TokenVerificationError,
)
from domain.shared.errors import ConfigError
from domain.shared.jobs import (
    AgentStatus,
    ExplainOutcome,
    JobResult,
    PollRequest,
    SchemaReport,
)
from domain.shared.operations import Operation
from domain.shared.scopes import Capabilities, Scope

TOKEN = "dbw_0123456789abcdef0123456789abcdef"
BASE = "https://dbward.example:8443/"

Handler = Callable[[httpx.Request], httpx.Response]


class ScriptedServer:
    """Records requests; answers each with `respond` (a fixed 200 JSON body by default)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.respond: Handler = lambda request: httpx.Response(200, json={})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.respond(request)

    def answer(self, status: int, body: object = None, *, content: bytes | None = None) -> None:
        if content is None:
            content = b"" if body is None else orjson.dumps(body)
        self.respond = lambda request: httpx.Response(status, content=content)

    def fail(self, exc_type: type[httpx.TransportError]) -> None:
        def raise_(request: httpx.Request) -> httpx.Response:
            raise exc_type("scripted failure", request=request)

        self.respond = raise_

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@pytest.fixture
def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[HttpServerClient]:
    http = HttpServerClient(
        BASE,
        TOKEN,
        agent_build="0.3.0.dev0",
        agent_id="prod-agent-1",
        transport=httpx.MockTransport(server),
    )
    yield http
    http.close()


def _poll_request(wait_ms: int = 0) -> PollRequest:
    return PollRequest(
        capabilities=Capabilities(
            scopes=(Scope("app", "production"),), operations=(Operation.EXECUTE_SELECT,)
        ),
        status=AgentStatus(
            in_flight=0, in_flight_preflight=0, max_concurrent=2, draining=False, uptime_secs=5
        ),
        limit=2,
        agent_version="0.2.0",
        agent_build="0.3.0.dev0",
        wait_ms=wait_ms,
    )


CLAIM_REPLY = {
    "execution_id": "exec-1",
    "request_id": "req/1",
    "execution_token": "{}",
    "operation": "execute_select",
    "database": "app",
    "environment": "production",
    "detail": "SELECT 1",
    "statement_timeout_secs": 30,
    "max_rows": None,
    "lease_expires_at": "2026-05-01T12:01:00.123456789+00:00",
    "execution_plan": ["SELECT 1"],
    "execution_plan_json": '["SELECT 1"]',
}


def _assert_common_headers(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == "dbward-agent/0.3.0.dev0"


def _assert_json_body(request: httpx.Request, expected: object) -> None:
    assert request.headers["content-type"] == "application/json"
    assert orjson.loads(request.content) == expected


def _assert_no_body(request: httpx.Request) -> None:
    assert request.content == b""
    assert "content-type" not in request.headers


# --- endpoints ----------------------------------------------------------------------------


def test_fetch_public_key(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200, {"public_key": "  " + "ab" * 32 + "\n"})

    assert client.fetch_public_key() == "ab" * 32
    request = server.last
    assert request.method == "GET"
    assert str(request.url) == "https://dbward.example:8443/api/public-key"
    _assert_common_headers(request)


def test_poll(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200, {"jobs": [], "server_version": "0.2.0", "wait_ms": 20000})

    reply = client.poll(_poll_request(wait_ms=20000))

    assert reply.server_version == "0.2.0"
    assert reply.held_wait_ms == 20000
    request = server.last
    assert (request.method, request.url.path) == ("POST", "/api/agent/poll")
    _assert_common_headers(request)
    assert request.content.startswith(b'{"agent_id":"prod-agent-1","capabilities":')
    assert request.content.endswith(
        b'"agent_version":"0.2.0","agent_build":"0.3.0.dev0","wait_ms":20000}'
    )
    assert request.headers["content-type"] == "application/json"


def test_long_poll_read_timeout_is_the_hold_plus_a_margin(
    server: ScriptedServer, client: HttpServerClient
) -> None:
    client.poll(_poll_request(wait_ms=25000))
    long_poll = server.last.extensions["timeout"]
    client.poll(_poll_request(wait_ms=0))
    classic = server.last.extensions["timeout"]

    assert long_poll["read"] == 35.0
    assert long_poll["connect"] == 10.0
    assert classic["read"] == 30.0
    assert classic["connect"] == 10.0


def test_claim(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200, CLAIM_REPLY)

    claim = client.claim("req/1", 300)

    assert claim.execution_id == "exec-1"
    assert claim.execution_plan == ("SELECT 1",)
    request = server.last
    assert request.method == "POST"
    assert request.url.raw_path == b"/api/agent/jobs/req%2F1/claim"
    _assert_common_headers(request)
    _assert_json_body(request, {"lease_duration_secs": 300, "agent_id": "prod-agent-1"})
    assert request.extensions["timeout"]["read"] == 30.0


def test_a_client_without_an_agent_id_polls_with_null_and_claims_with_the_lease_alone(
    server: ScriptedServer,
) -> None:
    nameless = HttpServerClient(
        BASE, TOKEN, agent_build="0.3.0.dev0", transport=httpx.MockTransport(server)
    )
    server.answer(200, {"jobs": []})
    nameless.poll(_poll_request())
    assert server.last.content.startswith(b'{"agent_id":null,"capabilities":')
    server.answer(200, CLAIM_REPLY)
    nameless.claim("req-1", 300)
    _assert_json_body(server.last, {"lease_duration_secs": 300})
    nameless.close()


def test_heartbeat_is_a_bodiless_post(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200, {"cancelled": True})

    assert client.heartbeat("exec-1").cancelled is True
    request = server.last
    assert (request.method, request.url.raw_path) == (
        "POST",
        b"/api/agent/jobs/exec-1/heartbeat",
    )
    _assert_common_headers(request)
    _assert_no_body(request)


def test_submit_result(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200, {"request_id": "req-1", "status": "executed"})

    client.submit_result("exec-1", JobResult(success=True, result_data="{}", duration_ms=3))

    request = server.last
    assert (request.method, request.url.raw_path) == ("POST", b"/api/agent/jobs/exec-1/result")
    _assert_common_headers(request)
    assert request.content == b'{"success":true,"result_data":"{}","duration_ms":3}'
    assert request.headers["content-type"] == "application/json"


def test_schema_sync_accepts_an_empty_200(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200)

    client.submit_schema(
        SchemaReport(
            scope=Scope("app", "production"),
            dialect="postgresql",
            status="failed",
            error_message="boom",
        )
    )

    request = server.last
    assert (request.method, request.url.path) == ("POST", "/api/agent/schema-sync")
    _assert_common_headers(request)
    _assert_json_body(
        request,
        {
            "database": "app",
            "environment": "production",
            "dialect": "postgresql",
            "status": "failed",
            "snapshot": None,
            "error_message": "boom",
        },
    )


def test_dry_run_claim_is_a_bodiless_post(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200, {"claim_token": "ct-1"})

    assert client.claim_dry_run("dr-1") == "ct-1"
    request = server.last
    assert (request.method, request.url.raw_path) == ("POST", b"/api/agent/dry-run/dr-1/claim")
    _assert_common_headers(request)
    _assert_no_body(request)


def test_dry_run_result(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200)

    client.submit_dry_run_result("dr-1", "ct-1", ExplainOutcome(plan=[{"Plan": {}}]))

    request = server.last
    assert (request.method, request.url.raw_path) == ("POST", b"/api/agent/dry-run/dr-1/result")
    _assert_common_headers(request)
    _assert_json_body(request, {"claim_token": "ct-1", "result": [{"Plan": {}}], "error": None})


def test_preflight_result(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(200)

    client.submit_preflight_result("pf-1", "ct-1", ExplainOutcome(error="timeout"))

    request = server.last
    assert (request.method, request.url.path) == ("POST", "/api/agent/preflight-result")
    _assert_common_headers(request)
    _assert_json_body(request, {"job_id": "pf-1", "claim_token": "ct-1", "error": "timeout"})


@pytest.mark.parametrize(
    ("raw_id", "segment"),
    [
        ("a/b", b"a%2Fb"),
        ("..", b"%2E%2E"),
        (".", b"%2E"),
        ("x?y#z", b"x%3Fy%23z"),
        ("a b", b"a%20b"),
        ("é", b"%C3%A9"),
    ],
)
def test_ids_cannot_escape_their_path_segment(
    server: ScriptedServer, client: HttpServerClient, raw_id: str, segment: bytes
) -> None:
    server.answer(200, {"cancelled": False})

    client.heartbeat(raw_id)

    assert server.last.url.raw_path == b"/api/agent/jobs/" + segment + b"/heartbeat"


def test_base_url_path_prefix_is_kept() -> None:
    server = ScriptedServer()
    server.answer(200, {"cancelled": False})
    with_prefix = HttpServerClient(
        "http://proxy.local/dbward//", TOKEN, agent_build="b", transport=httpx.MockTransport(server)
    )

    with_prefix.heartbeat("e")
    with_prefix.close()

    assert str(server.last.url) == "http://proxy.local/dbward/api/agent/jobs/e/heartbeat"


def test_repr_hides_the_token(client: HttpServerClient) -> None:
    assert TOKEN not in repr(client)


# --- error mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        (401, ServerUnauthorized, False),
        (404, ServerNotFound, False),
        (409, ServerConflict, False),
        (400, ServerError, False),
        (403, ServerError, False),
        (429, ServerError, True),
        (500, ServerError, True),
        (503, ServerError, True),
    ],
)
def test_http_error_statuses(
    server: ScriptedServer,
    client: HttpServerClient,
    status: int,
    kind: type[ServerError],
    transient: bool,
) -> None:
    server.answer(
        status, {"error": "conflict: already claimed", "code": "request.conflict", "hint": None}
    )

    with pytest.raises(kind) as caught:
        client.claim("req-1", 300)

    error = caught.value
    assert type(error) is kind
    assert error.status == status
    assert error.message == "conflict: already claimed"
    assert error.code == "request.conflict"
    assert error.retryable is transient
    assert error.is_hard is not transient


def test_error_envelope_without_code(server: ScriptedServer, client: HttpServerClient) -> None:
    server.answer(503, {"error": "server_shutting_down"})

    with pytest.raises(ServerError) as caught:
        client.claim("req-1", 300)

    assert caught.value.message == "server_shutting_down"
    assert caught.value.code is None


def test_a_non_json_error_body_is_carried_truncated(
    server: ScriptedServer, client: HttpServerClient
) -> None:
    server.answer(502, content=b"<html>" + b"x" * 500 + b"</html>")

    with pytest.raises(ServerError) as caught:
        client.heartbeat("e")

    assert caught.value.status == 502
    assert caught.value.message.startswith("<html>xxx")
    assert len(caught.value.message) <= 201


def test_an_empty_error_body_uses_the_reason_phrase(
    server: ScriptedServer, client: HttpServerClient
) -> None:
    server.answer(404)

    with pytest.raises(ServerNotFound, match="Not Found"):
        client.submit_schema(
            SchemaReport(scope=Scope("a", "b"), dialect="mysql", status="ready", snapshot={})
        )


def test_a_redirect_is_not_followed(server: ScriptedServer, client: HttpServerClient) -> None:
    server.respond = lambda request: httpx.Response(301, headers={"location": "https://x/"})

    with pytest.raises(ServerError, match="redirect") as caught:
        client.fetch_public_key()

    assert caught.value.is_hard
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "exc_type",
    [
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.ReadTimeout,
        httpx.ReadError,
        httpx.RemoteProtocolError,
    ],
)
def test_no_answer_is_server_unreachable(
    server: ScriptedServer, client: HttpServerClient, exc_type: type[httpx.TransportError]
) -> None:
    server.fail(exc_type)

    with pytest.raises(ServerUnreachable, match="POST /api/agent/poll") as caught:
        client.poll(_poll_request())

    assert not caught.value.is_hard


def test_a_2xx_body_that_is_not_json_is_malformed(
    server: ScriptedServer, client: HttpServerClient
) -> None:
    server.answer(200, content=b"not json")

    with pytest.raises(MalformedServerResponse, match="not JSON"):
        client.poll(_poll_request())


def test_a_2xx_body_of_the_wrong_shape_is_malformed(
    server: ScriptedServer, client: HttpServerClient
) -> None:
    server.answer(200, {"jobs": "x"})

    with pytest.raises(MalformedServerResponse, match="field jobs"):
        client.poll(_poll_request())


@pytest.mark.parametrize(
    ("call", "body"),
    [
        (lambda c: c.fetch_public_key(), {"public_key": 5}),
        (lambda c: c.claim("r", 300), {**CLAIM_REPLY, "execution_id": None}),
        (lambda c: c.heartbeat("e"), {}),
        (lambda c: c.claim_dry_run("d"), []),
    ],
)
def test_every_parsed_answer_is_checked(
    server: ScriptedServer,
    client: HttpServerClient,
    call: Callable[[HttpServerClient], object],
    body: object,
) -> None:
    server.answer(200, body)

    with pytest.raises(MalformedServerResponse):
        call(client)


def test_an_empty_2xx_body_where_json_is_expected_is_malformed(
    server: ScriptedServer, client: HttpServerClient
) -> None:
    server.answer(200)

    with pytest.raises(MalformedServerResponse, match="heartbeat response"):
        client.heartbeat("e")


# --- Ed25519Verifier ----------------------------------------------------------------------

KEY_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
OTHER_KEY_HEX = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def test_verifier_loads_a_good_key_with_whitespace() -> None:
    verifier = Ed25519Verifier()
    verifier.load_public_key(f"  {KEY_HEX}\n")

    assert verifier.verify(b"\x00" * 64, b"m") is False


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("zz" * 32, "not hex"),
        ("ab" * 31, "expected 32 bytes, got 31"),
        ("ab" * 33, "expected 32 bytes, got 33"),
        ("", "expected 32 bytes, got 0"),
        ("02" + "00" * 31, "not a valid Ed25519 point"),
    ],
)
def test_verifier_rejects_bad_keys(key: str, reason: str) -> None:
    with pytest.raises(TokenVerificationError, match=f"invalid public key: {reason}"):
        Ed25519Verifier().load_public_key(key)


def test_verify_without_a_key_raises() -> None:
    with pytest.raises(TokenVerificationError, match="no server public key"):
        Ed25519Verifier().verify(b"\x00" * 64, b"m")


def test_a_wrong_length_signature_is_just_invalid() -> None:
    verifier = Ed25519Verifier()
    verifier.load_public_key(KEY_HEX)

    assert verifier.verify(b"\x00" * 10, b"m") is False


def test_pinned_key_match_is_case_insensitive() -> None:
    verifier = Ed25519Verifier(pinned_hex=KEY_HEX.upper())

    verifier.load_public_key(KEY_HEX)


def test_pinned_key_mismatch_is_refused() -> None:
    verifier = Ed25519Verifier(pinned_hex=KEY_HEX)

    with pytest.raises(TokenVerificationError, match="public key mismatch"):
        verifier.load_public_key(OTHER_KEY_HEX)
    with pytest.raises(TokenVerificationError, match="no server public key"):
        verifier.verify(b"\x00" * 64, b"m")


def test_an_invalid_pinned_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[server\].public_key"):
        Ed25519Verifier(pinned_hex="abc")


# --- FileProbes ---------------------------------------------------------------------------


def test_probes_liveness_is_created_and_refreshed(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    probes = FileProbes(alive, tmp_path / "ready")

    probes.mark_alive()
    assert alive.exists()
    os.utime(alive, (1_000_000, 1_000_000))
    probes.mark_alive()

    assert alive.stat().st_mtime > 1_000_000


def test_probes_readiness_on_off_and_clear(tmp_path: Path) -> None:
    alive, ready = tmp_path / "alive", tmp_path / "ready"
    probes = FileProbes(str(alive), str(ready))

    probes.set_ready(True)
    assert ready.exists()
    probes.set_ready(True)
    probes.set_ready(False)
    assert not ready.exists()
    probes.set_ready(False)

    probes.mark_alive()
    probes.set_ready(True)
    probes.clear()
    assert not alive.exists()
    assert not ready.exists()
    probes.clear()


def test_probes_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    probes = FileProbes(tmp_path / "nope" / "alive", tmp_path / "nope" / "ready")

    with pytest.raises(OSError):
        probes.mark_alive()


# --- SystemClock --------------------------------------------------------------------------


def test_system_clock_wait_returns_at_once_when_set() -> None:
    clock = SystemClock()
    event = threading.Event()
    event.set()

    assert clock.wait(event, 60) is True


def test_system_clock_wait_times_out_and_clamps_negative_timeouts() -> None:
    clock = SystemClock()
    event = threading.Event()

    assert clock.wait(event, -5) is False
    assert clock.wait(event, 0.001) is False


def test_system_clock_now_is_utc_and_monotonic_advances() -> None:
    clock = SystemClock()

    assert clock.now().utcoffset() is not None
    assert clock.now().utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    first = clock.monotonic()
    assert clock.monotonic() >= first
