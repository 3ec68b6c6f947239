"""The FakeServer behind real HTTP on loopback, speaking the dbward 0.2 agent wire format.

Lets tests run the real `dbward agent` process (httpx client, signals, probe files, real
database drivers) against a scriptable server. JSON field names follow
docs/protocol.md §3; this is a test double, not the product's server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from domain.agent.errors import ServerError
from domain.shared.errors import DbwardError
from domain.shared.jobs import (
    ActiveJobStatus,
    AgentStatus,
    ExplainOutcome,
    JobResult,
    PollRequest,
    SchemaReport,
)
from domain.shared.operations import parse_operation
from domain.shared.scopes import Capabilities, Scope
from tests.fakes.server import FakeServer


def _poll_request(body: dict[str, Any]) -> PollRequest:
    caps = body.get("capabilities") or {}
    status = body.get("status") or {}
    return PollRequest(
        capabilities=Capabilities(
            scopes=tuple(Scope(s["database"], s["environment"]) for s in caps.get("scopes", [])),
            operations=tuple(parse_operation(op) for op in caps.get("operations", [])),
        ),
        status=AgentStatus(
            in_flight=status.get("in_flight", 0),
            in_flight_preflight=status.get("in_flight_preflight", 0),
            max_concurrent=status.get("max_concurrent", 0),
            draining=status.get("draining", False),
            uptime_secs=status.get("uptime_secs", 0),
            active_jobs=tuple(ActiveJobStatus(**job) for job in status.get("active_jobs", [])),
        ),
        limit=body.get("limit", 10),
        agent_version=body.get("agent_version", ""),
        agent_build=body.get("agent_build", ""),
        wait_ms=body.get("wait_ms", 0),
    )


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
            self._send(req, 401, {"error": "authentication failed", "code": "unauthorized"})
            return
        try:
            body = json.loads(raw) if raw else {}
            status, payload = self._route(method, req.path, body)
        except ServerError as exc:
            status, payload = exc.status, {"error": exc.message, "code": exc.code}
        except DbwardError as exc:
            status, payload = 500, {"error": str(exc), "code": "internal_error"}
        self._send(req, status, payload)

    def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        fake = self.fake
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and path == "/api/public-key":
            return 200, {"public_key": fake.fetch_public_key()}
        if path == "/api/agent/poll":
            response = fake.poll(_poll_request(body))
            payload: dict[str, Any] = {
                "jobs": [
                    {
                        "id": job.id,
                        "created_by": "alice",
                        "operation": job.operation,
                        "environment": job.environment,
                        "database": job.database,
                        "detail": "",
                    }
                    for job in response.jobs
                ],
                "dry_run_jobs": [asdict(job) for job in response.dry_run_jobs],
                "preflight_jobs": [asdict(job) for job in response.preflight_jobs],
                "server_version": response.server_version,
                "min_agent_version": response.min_agent_version,
                "upgrade_required": response.upgrade_required,
            }
            if response.held_wait_ms is not None:
                payload["wait_ms"] = response.held_wait_ms
            return 200, payload
        if parts[:3] == ["api", "agent", "jobs"] and len(parts) == 5:
            ident, action = parts[3], parts[4]
            if action == "claim":
                claim = fake.claim(ident, int(body.get("lease_duration_secs", 0)))
                data = asdict(claim)
                data["execution_plan"] = (
                    None if claim.execution_plan is None else list(claim.execution_plan)
                )
                return 200, data
            if action == "heartbeat":
                return 200, {"cancelled": fake.heartbeat(ident).cancelled}
            if action == "result":
                fields = set(JobResult.__dataclass_fields__)
                fake.submit_result(
                    ident, JobResult(**{k: v for k, v in body.items() if k in fields})
                )
                request = fake.executions[ident]
                return 200, {"request_id": request.id, "status": request.status}
        if path == "/api/agent/schema-sync":
            fake.submit_schema(
                SchemaReport(
                    scope=Scope(body["database"], body["environment"]),
                    dialect=body["dialect"],
                    status=body["status"],
                    snapshot=body.get("snapshot"),
                    error_message=body.get("error_message"),
                )
            )
            return 200, None
        if parts[:3] == ["api", "agent", "dry-run"] and len(parts) == 5:
            ident, action = parts[3], parts[4]
            if action == "claim":
                return 200, {"claim_token": fake.claim_dry_run(ident)}
            outcome = ExplainOutcome(plan=body.get("result"), error=body.get("error"))
            fake.submit_dry_run_result(ident, body.get("claim_token", ""), outcome)
            return 200, None
        if path == "/api/agent/preflight-result":
            outcome = ExplainOutcome(plan=body.get("result"), error=body.get("error"))
            fake.submit_preflight_result(body["job_id"], body.get("claim_token", ""), outcome)
            return 200, None
        return 404, {"error": f"not found: {path}", "code": "request.not_found"}

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.send_header("x-dbward-version", "0.2.0")
        req.end_headers()
        req.wfile.write(data)
