"""API metrics are labelled by route template, never by the raw path."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.testclient import TestClient

from adapters.http_api.app import create_app
from domain.server.errors import Unauthenticated
from domain.server.rbac import Principal
from tests.fakes.metrics import RecordingServerMetrics


def _refuse(_header: str | None) -> Principal:
    raise Unauthenticated("no token")


def _client(metrics: RecordingServerMetrics) -> TestClient:
    router = APIRouter()

    @router.get("/api/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @router.get("/api/boom")
    def boom() -> None:
        raise RuntimeError("bug")

    app = create_app(routers=[router], authenticate=_refuse, version="t", metrics=metrics)
    return TestClient(app, raise_server_exceptions=False)


def test_requests_are_reported_by_route_template_and_status() -> None:
    metrics = RecordingServerMetrics()
    with _client(metrics) as client:
        client.get("/api/things/a-1")
        client.get("/api/things/b-2")
        client.get("/no/such/path")
        client.get("/api/boom")
    assert metrics.api == [
        ("GET", "/api/things/{thing_id}", 200),
        ("GET", "/api/things/{thing_id}", 200),
        ("GET", "unmatched", 404),
        ("GET", "/api/boom", 500),
    ]


def test_a_body_over_the_limit_is_reported_as_413() -> None:
    metrics = RecordingServerMetrics()
    with _client(metrics) as client:
        client.post("/api/things/x", content=b"x" * (2 * 1024 * 1024))
    assert [status for _, _, status in metrics.api] == [413]
