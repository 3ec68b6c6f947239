"""The request bodies' JSON Schemas, which the server's OpenAPI document shows for the agent
routes: self-contained, and they accept what the agent sends and refuse what the server
refuses."""

from __future__ import annotations

import json

import jsonschema_rs
import pytest

from adapters.wire import agent_protocol as wire
from domain.shared.jobs import AgentStatus, ClaimRequest, JobResult, PollRequest
from domain.shared.operations import Operation
from domain.shared.scopes import Capabilities, Scope

POLL = PollRequest(
    capabilities=Capabilities(scopes=(Scope("app", "pg"),), operations=(Operation.EXECUTE_SELECT,)),
    status=AgentStatus(
        in_flight=1, in_flight_preflight=0, max_concurrent=2, draining=False, uptime_secs=5
    ),
    limit=1,
    agent_version="0.2.0",
    wait_ms=20000,
)


@pytest.mark.parametrize(
    "decode",
    [
        wire.decode_poll_request,
        wire.decode_claim_request,
        wire.decode_job_result,
        wire.decode_schema_report,
        wire.decode_dry_run_result,
        wire.decode_preflight_result,
    ],
)
def test_every_request_body_schema_is_self_contained(decode: object) -> None:
    schema = wire.body_schema(decode)  # type: ignore[arg-type]
    assert schema["type"] == "object"
    assert "$ref" not in json.dumps(schema) and "$defs" not in schema


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (wire.decode_poll_request, wire.encode_poll_request(POLL)),
        (wire.decode_claim_request, wire.encode_claim_request(ClaimRequest(300))),
        (wire.decode_job_result, wire.encode_job_result(JobResult(success=True, duration_ms=4))),
    ],
)
def test_what_the_agent_sends_fits_the_schema(decode: object, body: bytes) -> None:
    assert jsonschema_rs.is_valid(wire.body_schema(decode), json.loads(body))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"capabilities": {"scopes": []}, "limit": -1},
        {"capabilities": {"scopes": [], "operations": ["execute_query"]}},
        {"limit": 1},
    ],
)
def test_a_poll_the_server_refuses_does_not_fit_the_schema(body: dict[str, object]) -> None:
    with pytest.raises(wire.WrongShapeError):
        wire.decode_poll_request(json.dumps(body).encode())
    assert not jsonschema_rs.is_valid(wire.body_schema(wire.decode_poll_request), body)
