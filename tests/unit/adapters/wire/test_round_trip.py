"""Round trips across the seam: what one side writes, the other reads back unchanged.

The agent's client and the server's agent routes both go through
`adapters.wire.agent_protocol`. For every message these tests take a domain value, encode
it as its sender does and decode it as its receiver does: requests with the agent's
encoder and the server's decoder, answers with the server's encoder and the agent's
decoder. Getting back anything but the value we started from means the two sides have
drifted apart. The bytes themselves are pinned by test_golden.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from adapters.wire import agent_protocol as wire
from domain.shared.jobs import (
    ActiveJobStatus,
    AgentStatus,
    ClaimedJob,
    ClaimRequest,
    DispatchedJob,
    DryRunJob,
    DryRunResult,
    ExplainOutcome,
    HeartbeatReply,
    JobResult,
    PollRequest,
    PollResponse,
    PreflightJob,
    PreflightResult,
    SchemaReport,
)
from domain.shared.operations import DEFAULT_OPERATIONS, Operation
from domain.shared.scopes import Capabilities, Scope

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class RoundTrip:
    """One message value, with the sender's encoder and the receiver's decoder."""

    name: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    value: Any


# --- what the agent sends, the server reads ------------------------------------------------

POLL = PollRequest(
    capabilities=Capabilities(
        scopes=(Scope("app", "production"), Scope("billing", "staging")),
        operations=(*DEFAULT_OPERATIONS, Operation.MIGRATE_REPAIR),
    ),
    status=AgentStatus(
        in_flight=1,
        in_flight_preflight=2,
        max_concurrent=4,
        draining=False,
        uptime_secs=U64_MAX,
        active_jobs=(
            ActiveJobStatus("req-9", "execute_dml", 17),
            ActiveJobStatus("req-é", "migrate_up", 0),
        ),
    ),
    limit=3,
    agent_version="0.2.0",
    agent_build="0.3.0.dev0",
    wait_ms=20_000,
    degraded_scopes=(Scope("reports", "production"),),
)


def _poll(name: str, value: PollRequest) -> RoundTrip:
    return RoundTrip(name, wire.encode_poll_request, wire.decode_poll_request, value)


def _result(name: str, value: JobResult) -> RoundTrip:
    return RoundTrip(name, wire.encode_job_result, wire.decode_job_result, value)


AGENT_TO_SERVER = [
    _poll("poll: long-poll with a database down", POLL),
    _poll("poll: classic", replace(POLL, wait_ms=0, degraded_scopes=())),
    _poll(
        "poll: the final one, draining",
        PollRequest(
            capabilities=Capabilities(scopes=(), operations=()),
            status=AgentStatus(
                in_flight=0,
                in_flight_preflight=0,
                max_concurrent=U32_MAX,
                draining=True,
                uptime_secs=0,
            ),
            limit=0,
            agent_version="0.2.0",
            agent_build="",
        ),
    ),
    _poll(
        "poll: a peer that leaves every optional key out",
        PollRequest(capabilities=Capabilities(scopes=(Scope("app", "dev"),), operations=())),
    ),
    _poll("poll: a named agent", replace(POLL, agent_id="prod-agent-1", limit=U32_MAX)),
    RoundTrip(
        "claim: the lease asked for",
        wire.encode_claim_request,
        wire.decode_claim_request,
        ClaimRequest(300),
    ),
    RoundTrip(
        "claim: a named agent",
        wire.encode_claim_request,
        wire.decode_claim_request,
        ClaimRequest(300, agent_id="prod-agent-1"),
    ),
    RoundTrip(
        "claim: no lease asked for",
        wire.encode_claim_request,
        wire.decode_claim_request,
        ClaimRequest(),
    ),
    _result(
        "result: a select",
        JobResult(
            success=True,
            result_data='{"rows":[{"n":"é"}],"truncated":false,"truncation_reason":null}',
            truncated=False,
            duration_ms=42,
        ),
    ),
    _result(
        "result: a dml",
        JobResult(success=True, result_data='{"rows_affected":5}', rows_affected=5, duration_ms=7),
    ),
    _result(
        "result: a dml that returned rows",
        JobResult(
            success=True,
            result_data='{"rows_affected":1,"rows":[{"id":3}],"truncated":false,'
            '"truncation_reason":null,"columns":[{"name":"id","type":"int4"}]}',
            rows_affected=1,
            truncated=False,
            duration_ms=7,
        ),
    ),
    _result("result: a failure", JobResult.failure("driver error: query timed out", 30_001)),
    _result("result: success only", JobResult(success=False)),
    _result(
        "result: every field at its limits",
        JobResult(
            success=True,
            result_data="",
            error_message="",
            rows_affected=U64_MAX,
            truncated=True,
            total_rows=0,
            duration_ms=U64_MAX,
        ),
    ),
    RoundTrip(
        "schema sync: a snapshot",
        wire.encode_schema_report,
        wire.decode_schema_report,
        SchemaReport(
            scope=Scope("app", "production"),
            dialect="postgresql",
            status="ready",
            snapshot={"tables": [{"name": "café", "rows": 1.5e9, "estimate": None}]},
        ),
    ),
    RoundTrip(
        "schema sync: a failure",
        wire.encode_schema_report,
        wire.decode_schema_report,
        SchemaReport(
            scope=Scope("app", "staging"), dialect="mysql", status="failed", error_message="boom"
        ),
    ),
    RoundTrip(
        "dry-run result: a plan",
        wire.encode_dry_run_result,
        wire.decode_dry_run_result,
        DryRunResult("ct-1", ExplainOutcome(plan=[{"Plan": {"Total Cost": 0.01}}])),
    ),
    RoundTrip(
        "dry-run result: an error",
        wire.encode_dry_run_result,
        wire.decode_dry_run_result,
        DryRunResult("ct-1", ExplainOutcome(error="explain refused: DELETE")),
    ),
    RoundTrip(
        "preflight result: a plan",
        wire.encode_preflight_result,
        wire.decode_preflight_result,
        PreflightResult("pf-1", "ct-2", ExplainOutcome(plan={"query_block": {"select_id": 1}})),
    ),
    RoundTrip(
        "preflight result: an error",
        wire.encode_preflight_result,
        wire.decode_preflight_result,
        PreflightResult("pf-1", "ct-2", ExplainOutcome(error="no pool available for scope")),
    ),
]


# --- what the server sends, the agent reads ------------------------------------------------

OFFER = PollResponse(
    jobs=(
        DispatchedJob(
            "req-1",
            "execute_select",
            "app",
            "production",
            created_by="alice",
            detail="SELECT 'é'",
        ),
        DispatchedJob("req-2", "migrate_status", "app", "production", created_by="bob"),
    ),
    dry_run_jobs=(DryRunJob("dr-1", "req-3", "app", "staging", "SELECT * FROM t"),),
    preflight_jobs=(PreflightJob("pf-1", "app", "production", "SELECT 2", "ct-1"),),
    server_version="0.3.0",
    min_agent_version="0.2.0",
    upgrade_required=False,
    held_wait_ms=0,
)


def _offer(name: str, value: PollResponse) -> RoundTrip:
    return RoundTrip(name, wire.encode_poll_response, wire.decode_poll_response, value)


def _claimed(name: str, value: ClaimedJob) -> RoundTrip:
    return RoundTrip(name, wire.encode_claimed_job, wire.decode_claimed_job, value)


SQL_CLAIM = ClaimedJob(
    execution_id="exec-1",
    request_id="req-1",
    execution_token='{"request_id":"req-1","signature":"ab"}',
    operation="execute_select",
    database="app",
    environment="production",
    detail="SELECT 1; SELECT 'é'",
    statement_timeout_secs=30,
    max_rows=1000,
    lease_expires_at="2026-05-01T12:01:00.123456000+00:00",
    execution_plan=("SELECT 1", "SELECT 'é'"),
    execution_plan_json='["SELECT 1","SELECT \'é\'"]',
)

SERVER_TO_AGENT = [
    RoundTrip("public key", wire.encode_public_key, wire.decode_public_key, "03a1" * 16),
    _offer("poll answer: work at once", OFFER),
    _offer("poll answer: no long-poll", replace(OFFER, held_wait_ms=None)),
    _offer(
        "poll answer: an empty hold",
        PollResponse(server_version="0.3.0", min_agent_version="0.2.0", held_wait_ms=20_000),
    ),
    _offer(
        "poll answer: upgrade required",
        PollResponse(server_version="0.3.0", min_agent_version="0.4.0", upgrade_required=True),
    ),
    _offer(
        "poll answer: a preflight job without a claim token",
        PollResponse(
            preflight_jobs=(PreflightJob("pf-2", "app", "production", "SELECT 3", ""),),
            server_version="0.3.0",
            min_agent_version="0.2.0",
        ),
    ),
    _claimed("claim answer: statements", SQL_CLAIM),
    _claimed(
        "claim answer: a migration, no policy",
        replace(
            SQL_CLAIM,
            operation="migrate_up",
            detail='{"format":"v2","direction":"up","versions":["1"]}',
            statement_timeout_secs=None,
            max_rows=None,
            execution_plan=None,
            execution_plan_json=None,
        ),
    ),
    _claimed(
        "claim answer: counters at their limits",
        replace(SQL_CLAIM, statement_timeout_secs=U32_MAX, max_rows=0, execution_plan=()),
    ),
    RoundTrip(
        "heartbeat answer: go on",
        wire.encode_heartbeat_reply,
        wire.decode_heartbeat_reply,
        HeartbeatReply(cancelled=False),
    ),
    RoundTrip(
        "heartbeat answer: cancel",
        wire.encode_heartbeat_reply,
        wire.decode_heartbeat_reply,
        HeartbeatReply(cancelled=True),
    ),
    RoundTrip(
        "dry-run claim answer",
        wire.encode_dry_run_claim,
        wire.decode_dry_run_claim,
        "6f1c0b9e-1111-4222-8333-944445555666",
    ),
]


@pytest.mark.parametrize("case", AGENT_TO_SERVER, ids=lambda case: case.name)
def test_what_the_agent_writes_the_server_reads_back(case: RoundTrip) -> None:
    assert case.decode(case.encode(case.value)) == case.value


@pytest.mark.parametrize("case", SERVER_TO_AGENT, ids=lambda case: case.name)
def test_what_the_server_writes_the_agent_reads_back(case: RoundTrip) -> None:
    assert case.decode(case.encode(case.value)) == case.value


def test_a_draining_servers_answer_reads_as_an_empty_poll() -> None:
    assert wire.decode_poll_response(wire.DRAINING_POLL_RESPONSE) == PollResponse()


def test_every_message_has_a_round_trip() -> None:
    """A message added to the wire module needs a case here, or the seam goes unchecked.

    The result's receipt is the one answer the agent does not read (a 2xx is enough).
    """
    covered = {case.encode.__name__ for case in AGENT_TO_SERVER + SERVER_TO_AGENT}
    encoders = {name for name in wire.__all__ if name.startswith("encode_")}
    decoders = {name for name in wire.__all__ if name.startswith("decode_")}

    assert encoders - covered == {"encode_result_receipt"}
    assert {case.decode.__name__ for case in AGENT_TO_SERVER + SERVER_TO_AGENT} == decoders
