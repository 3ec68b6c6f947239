"""The FakeServer behind real HTTP on loopback, speaking the dbward 0.2 agent wire format.

Lets tests run the real `dbward agent` process (httpx client, signals, probe files, real
database drivers) against a scriptable server. Bodies are read and written by
`adapters.wire.agent_protocol`, the module the real server's agent routes use, so the
double speaks exactly the product's wire format (docs/protocol.md §3); this is a test
double, not the product's server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import orjson

from adapters.wire import agent_protocol as wire
from domain.agent.errors import ServerError
from domain.shared.errors import DbwardError
from domain.shared.jobs import ResultReceipt
from tests.fakes.server import FakeServer


def _error(message: str, code: str | None) -> bytes:
    return orjson.dumps({"error": message, "code": code})


class FakeHttpServer:
    """Serves a FakeServer on 127.0.0.1:<free port>. `url` is the base URL."""

    def __init__(self, fake: FakeServer, *, agent_token: str) -> None:
        self.fake = fake
        self.agent_token = agent_token
        self.unauthorized = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                outer._handle(self, "GET")

            def do_POST(self) -> None:
                outer._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- request handling ------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        if self.unauthorized or req.headers.get("Authorization") != f"Bearer {self.agent_token}":
            self._send(req, 401, _error("authentication failed", "unauthorized"))
            return
        try:
            status, payload = self._route(method, req.path, raw)
        except wire.NotJsonError:
            status = 400
            payload = _error("validation: request body is not valid JSON", "validation.failed")
        except wire.WrongShapeError as exc:
            status, payload = 422, _error(str(exc), "validation.unprocessable")
        except ServerError as exc:
            status, payload = exc.status, _error(exc.message, exc.code)
        except DbwardError as exc:
            status, payload = 500, _error(str(exc), "internal_error")
        self._send(req, status, payload)

    def _route(self, method: str, path: str, raw: bytes) -> tuple[int, bytes | None]:
        fake = self.fake
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and path == "/api/public-key":
            return 200, wire.encode_public_key(fake.fetch_public_key())
        if path == "/api/agent/poll":
            return 200, wire.encode_poll_response(fake.poll(wire.decode_poll_request(raw)))
        if parts[:3] == ["api", "agent", "jobs"] and len(parts) == 5:
            ident, action = parts[3], parts[4]
            if action == "claim":
                lease = wire.decode_claim_request(raw).lease_duration_secs
                return 200, wire.encode_claimed_job(fake.claim(ident, lease or 0))
            if action == "heartbeat":
                return 200, wire.encode_heartbeat_reply(fake.heartbeat(ident))
            if action == "result":
                fake.submit_result(ident, wire.decode_job_result(raw))
                request = fake.executions[ident]
                return 200, wire.encode_result_receipt(ResultReceipt(request.id, request.status))
        if path == "/api/agent/schema-sync":
            fake.submit_schema(wire.decode_schema_report(raw))
            return 200, None
        if parts[:3] == ["api", "agent", "dry-run"] and len(parts) == 5:
            ident, action = parts[3], parts[4]
            if action == "claim":
                return 200, wire.encode_dry_run_claim(fake.claim_dry_run(ident))
            dry_run = wire.decode_dry_run_result(raw)
            fake.submit_dry_run_result(ident, dry_run.claim_token, dry_run.outcome)
            return 200, None
        if path == "/api/agent/preflight-result":
            preflight = wire.decode_preflight_result(raw)
            fake.submit_preflight_result(preflight.job_id, preflight.claim_token, preflight.outcome)
            return 200, None
        return 404, _error(f"not found: {path}", "request.not_found")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, payload: bytes | None) -> None:
        data = payload or b""
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("x-dbward-version", "0.2.0")
        req.end_headers()
        req.wfile.write(data)
