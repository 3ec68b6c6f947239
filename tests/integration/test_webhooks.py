"""Webhooks of a real `dbward server` process, received on loopback (docs/operations.md
"Webhooks").

The receiver answers the generic webhook's first two sends with 503 and checks every
signature with the documented algorithm; each event must arrive (accepted) exactly once,
after three attempts for the first one, with no literal of the SQL in any body. A second,
Slack-format webhook gets the Slack message shape.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.agent_process import wait_until
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

SECRET = "whsec-integration-0123456789"
LITERAL = "s3cr3t-literal-value"


def verify(secret: str, header: str, body: bytes, tolerance_secs: int = 300) -> bool:
    """The receiver's check, as docs/operations.md "Verifying the signature" writes it."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp, signature = fields.get("t", ""), fields.get("v1", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance_secs:
        return False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that fails the first `failures` POSTs to /generic."""

    failures: int = 2
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ThreadingHTTPServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    status = 200
                    if self.path == "/generic" and outer.failures > 0:
                        outer.failures -= 1
                        status = 503
                    outer.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                 body, status)
                    )  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def accepted(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path and r.answered == 200]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = receiver.start()
    yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(
    tmp_path: Path, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    monkeypatch.setenv("DBWARD_TEST_WEBHOOK_SECRET", SECRET)
    base = receiver[1]
    process = ServerProcess(tmp_path)
    process.config.write_text(
        "allow_private_networks = true\n"
        f'state_dir = "{process.state}"\n'
        f'listen = "127.0.0.1:{process.port}"\n'
        "[[databases]]\n"
        'name = "app"\n'
        'environments = ["prod"]\n'
        "[[workflows]]\n"
        'database = "app"\n'
        "[[workflows.steps]]\n"
        "[[workflows.steps.approvers]]\n"
        'role = "approver"\n'
        "[[webhooks]]\n"
        'id = "generic"\n'
        f'url = "{base}/generic"\n'
        'secret = "${DBWARD_TEST_WEBHOOK_SECRET}"\n'
        'events = ["request.created", "request.cancelled"]\n'
        "[[webhooks]]\n"
        'id = "chat"\n'
        f'url = "{base}/slack"\n'
        'format = "slack"\n'
        'events = ["request.created"]\n'
        "[webhook_delivery]\n"
        "initial_backoff_secs = 0.2\n"
        "max_backoff_secs = 0.5\n"
    )
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def test_events_reach_a_flaky_receiver_once_signed_and_without_literals(
    server: ServerProcess, receiver: tuple[Receiver, str]
) -> None:
    received, _ = receiver
    sql = f"SELECT id FROM users WHERE api_key = '{LITERAL}' AND id = 987654"
    with server.client() as admin:
        created = admin.post(
            "/api/requests",
            json={"database": "app", "environment": "prod", "operation": "execute_select",
                  "detail": sql, "reason": "check a key"},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        assert created.json()["status"] == "pending"
        cancelled = admin.post(f"/api/requests/{request_id}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text

        wait_until(lambda: len(received.accepted("/generic")) >= 2, 30, "both generic events")
        wait_until(lambda: len(received.accepted("/slack")) >= 1, 30, "the slack message")
        listing = admin.get("/api/webhook-deliveries", params={"status": "delivered"})
        assert listing.status_code == 200, listing.text
        pending = admin.get("/api/webhook-deliveries", params={"status": "pending"}).json()
        hooks = admin.get("/api/webhooks").json()["webhooks"]
        refused = admin.post("/api/webhooks", json={"id": "x"})

    generic = received.accepted("/generic")
    assert sorted(json.loads(r.body)["event"] for r in generic) == [
        "request.cancelled",
        "request.created",
    ]
    # Exactly once each: one accepted send per delivery, each after the refused ones.
    assert len({r.headers["x-dbward-delivery"] for r in generic}) == 2
    first = next(
        json.loads(r.body) for r in generic if json.loads(r.body)["event"] == "request.created"
    )
    assert (first["request_id"], first["requester"], first["database"]) == (
        request_id,
        "admin",
        "app",
    )
    assert "api_key = ?" in first["detail"]

    for item in received.received:
        assert LITERAL.encode() not in item.body
        assert b"987654" not in item.body
        if item.path == "/generic":
            assert verify(SECRET, item.headers["x-dbward-signature"], item.body)
            assert not verify("another-secret", item.headers["x-dbward-signature"], item.body)
            assert item.headers["x-dbward-event"] == json.loads(item.body)["event"]

    slack = json.loads(received.accepted("/slack")[0].body)
    assert slack["text"] == f"dbward: request.created for request {request_id} on app/prod"
    assert [block["type"] for block in slack["blocks"]] == [
        "section",
        "section",
        "section",
        "context",
    ]
    assert "x-dbward-signature" not in received.accepted("/slack")[0].headers

    by_event = {d["event"]: d for d in listing.json()["deliveries"] if d["webhook_id"] == "generic"}
    attempts = sorted(d["attempts"] for d in by_event.values())
    assert attempts[-1] >= 2 and sum(attempts) == 4  # two 503s, then one success each
    assert pending["total"] == 0
    assert {h["id"]: h["signed"] for h in hooks} == {"generic": True, "chat": False}
    assert all("secret" not in h for h in hooks)
    assert refused.status_code == 405
    assert refused.json()["code"] == "config_only"
