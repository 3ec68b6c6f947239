"""Golden vectors for the dbward 0.2 wire format (docs/protocol.md §3, §4.1).

Every expected value here is a literal: a change to a field name, its order, or the bytes
that get signed must show up as a failing test, never slip through a round trip.
"""

from __future__ import annotations

import json
from dataclasses import replace

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.crypto.ed25519_verifier import Ed25519Verifier
from adapters.wire import agent_protocol as wire
from domain.agent.errors import TokenVerificationError
from domain.agent.token_verification import parse_rfc3339, verify_execution_token
from domain.shared.execution_token import canonical_json, detail_hash, signed_message
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
    ResultReceipt,
    SchemaReport,
)
from domain.shared.operations import DEFAULT_OPERATIONS, Operation
from domain.shared.scopes import Capabilities, Scope

# --- poll -------------------------------------------------------------------------------


def _poll_request(*, wait_ms: int = 0, limit: int = 1) -> PollRequest:
    return PollRequest(
        capabilities=Capabilities(
            scopes=(Scope("app", "production"),),
            operations=DEFAULT_OPERATIONS,
        ),
        status=AgentStatus(
            in_flight=1,
            in_flight_preflight=0,
            max_concurrent=2,
            draining=False,
            uptime_secs=123,
            active_jobs=(ActiveJobStatus("req-9", "execute_select", 4),),
        ),
        limit=limit,
        agent_version="0.2.0",
        agent_build="0.3.0.dev0",
        wait_ms=wait_ms,
    )


def test_poll_body_is_the_reference_shape_then_our_additive_fields() -> None:
    body = wire.encode_poll_request(_poll_request(wait_ms=20000))

    assert body == (
        b'{"agent_id":null,'
        b'"capabilities":{"scopes":[{"database":"app","environment":"production"}],'
        b'"operations":["execute_select","execute_dml","migrate_up","migrate_down",'
        b'"migrate_status"]},'
        b'"status":{"in_flight":1,"in_flight_preflight":0,"max_concurrent":2,"draining":false,'
        b'"uptime_secs":123,"active_jobs":[{"request_id":"req-9","operation":"execute_select",'
        b'"elapsed_secs":4}]},'
        b'"limit":1,"agent_version":"0.2.0","agent_build":"0.3.0.dev0","wait_ms":20000}'
    )


def test_poll_body_without_long_poll_omits_wait_ms() -> None:
    request = PollRequest(
        capabilities=Capabilities(scopes=(), operations=(Operation.MIGRATE_REPAIR,)),
        status=AgentStatus(
            in_flight=0, in_flight_preflight=0, max_concurrent=0, draining=True, uptime_secs=0
        ),
        limit=0,
        agent_version="0.2.0",
        agent_build="b",
    )

    assert wire.encode_poll_request(request) == (
        b'{"agent_id":null,"capabilities":{"scopes":[],"operations":["migrate_repair"]},'
        b'"status":{"in_flight":0,"in_flight_preflight":0,"max_concurrent":0,"draining":true,'
        b'"uptime_secs":0,"active_jobs":[]},"limit":0,"agent_version":"0.2.0","agent_build":"b"}'
    )


POLL_RESPONSE_EXAMPLE = b"""
{"jobs": [{"id":"req-1","created_by":"alice","operation":"execute_select",
           "environment":"production","database":"app","detail":"SELECT 1"}],
 "dry_run_jobs": [{"id":"dr-1","request_id":"req-2","database":"app","environment":"production",
                   "sql":"SELECT * FROM t"}],
 "preflight_jobs": [{"id":"pf-1","database":"app","environment":"production","sql":"SELECT 2",
                     "claim_token":"ct-1"}],
 "server_version":"0.2.0","min_agent_version":"0.2.0","upgrade_required":false}
"""


def test_poll_response_example_parses() -> None:
    parsed = wire.decode_poll_response(POLL_RESPONSE_EXAMPLE)

    assert parsed == PollResponse(
        jobs=(
            DispatchedJob(
                "req-1",
                "execute_select",
                "app",
                "production",
                created_by="alice",
                detail="SELECT 1",
            ),
        ),
        dry_run_jobs=(DryRunJob("dr-1", "req-2", "app", "production", "SELECT * FROM t"),),
        preflight_jobs=(PreflightJob("pf-1", "app", "production", "SELECT 2", "ct-1"),),
        server_version="0.2.0",
        min_agent_version="0.2.0",
        upgrade_required=False,
        held_wait_ms=None,
    )


def test_poll_response_bytes_are_the_reference_shape_then_the_echoed_hold() -> None:
    response = PollResponse(
        jobs=(
            DispatchedJob(
                "req-1",
                "execute_select",
                "app",
                "production",
                created_by="alice",
                detail="SELECT 1",
            ),
        ),
        dry_run_jobs=(DryRunJob("dr-1", "req-2", "app", "production", "SELECT * FROM t"),),
        preflight_jobs=(PreflightJob("pf-1", "app", "production", "SELECT 2", "ct-1"),),
        server_version="0.3.0",
        min_agent_version="0.2.0",
        upgrade_required=False,
    )

    assert wire.encode_poll_response(response) == (
        b'{"jobs":[{"id":"req-1","created_by":"alice","operation":"execute_select",'
        b'"environment":"production","database":"app","detail":"SELECT 1"}],'
        b'"dry_run_jobs":[{"id":"dr-1","request_id":"req-2","database":"app",'
        b'"environment":"production","sql":"SELECT * FROM t"}],'
        b'"preflight_jobs":[{"id":"pf-1","database":"app","environment":"production",'
        b'"sql":"SELECT 2","claim_token":"ct-1"}],'
        b'"server_version":"0.3.0","min_agent_version":"0.2.0","upgrade_required":false}'
    )
    assert wire.encode_poll_response(PollResponse(server_version="0.3.0", held_wait_ms=0)) == (
        b'{"jobs":[],"dry_run_jobs":[],"preflight_jobs":[],"server_version":"0.3.0",'
        b'"min_agent_version":null,"upgrade_required":false,"wait_ms":0}'
    )


def test_a_draining_server_answers_only_jobs() -> None:
    assert wire.DRAINING_POLL_RESPONSE == b'{"jobs":[]}'


def test_draining_server_answer_defaults_every_missing_key() -> None:
    assert wire.decode_poll_response(b'{"jobs": []}') == PollResponse()
    assert wire.decode_poll_response(b"{}") == PollResponse()


def test_poll_response_ignores_unknown_keys_and_reads_the_echoed_hold() -> None:
    parsed = wire.decode_poll_response(
        b'{"jobs": [], "wait_ms": 20000, "future_field": {"x": 1}, "upgrade_required": true}'
    )

    assert parsed.held_wait_ms == 20000
    assert parsed.upgrade_required is True


@pytest.mark.parametrize("echo", ["20000", True, 1.5, None, [1]])
def test_a_hold_that_is_not_an_integer_means_no_long_poll(echo: object) -> None:
    assert wire.decode_poll_response(orjson.dumps({"wait_ms": echo})).held_wait_ms is None


def test_preflight_job_without_claim_token_gets_an_empty_one() -> None:
    parsed = wire.decode_poll_response(
        b'{"preflight_jobs": [{"id": "p", "database": "d", "environment": "e", "sql": "s"}]}'
    )

    assert parsed.preflight_jobs[0].claim_token == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": "x"}, "jobs"),
        ({"jobs": [{"id": 1, "operation": "o", "database": "d", "environment": "e"}]}, "jobs.0.id"),
        ({"jobs": [{"operation": "o", "database": "d", "environment": "e"}]}, "jobs.0.id"),
        ({"upgrade_required": "yes"}, "upgrade_required"),
        ({"dry_run_jobs": [{"id": "x"}]}, "dry_run_jobs.0.request_id"),
        (
            {
                "jobs": [
                    {
                        "id": "1",
                        "created_by": None,
                        "operation": "o",
                        "database": "d",
                        "environment": "e",
                    }
                ]
            },
            "jobs.0.created_by",
        ),
        ([], ""),
        ("jobs", ""),
    ],
)
def test_poll_response_shape_errors_name_the_field(body: object, field: str) -> None:
    with pytest.raises(wire.WrongShapeError) as caught:
        wire.decode_poll_response(orjson.dumps(body))

    assert caught.value.problems[0].location == field


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b"", b"{not json"])
def test_a_body_that_is_not_json_is_malformed(body: bytes) -> None:
    with pytest.raises(wire.NotJsonError, match="Invalid JSON"):
        wire.decode_poll_response(body)


# --- claim ------------------------------------------------------------------------------

CLAIM_RESPONSE_EXAMPLE = b"""
{"execution_id":"6f1c0b9e-1111-4222-8333-944445555666","request_id":"req-1",
 "execution_token":"{\\"request_id\\":\\"req-1\\"}",
 "operation":"execute_select","database":"app","environment":"production",
 "detail":"SELECT 1",
 "statement_timeout_secs":30,
 "max_rows":null,
 "lease_expires_at":"2026-05-01T12:01:00.123456789+00:00",
 "execution_plan":["SELECT 1"],
 "execution_plan_json":"[\\"SELECT 1\\"]"}
"""


def test_claim_response_example_parses() -> None:
    claim = wire.decode_claimed_job(CLAIM_RESPONSE_EXAMPLE)

    assert claim == ClaimedJob(
        execution_id="6f1c0b9e-1111-4222-8333-944445555666",
        request_id="req-1",
        execution_token='{"request_id":"req-1"}',
        operation="execute_select",
        database="app",
        environment="production",
        detail="SELECT 1",
        statement_timeout_secs=30,
        max_rows=None,
        lease_expires_at="2026-05-01T12:01:00.123456789+00:00",
        execution_plan=("SELECT 1",),
        execution_plan_json='["SELECT 1"]',
    )


def test_claim_for_a_migration_has_null_plans_and_an_old_server_may_omit_them() -> None:
    claim = wire.decode_claimed_job(
        orjson.dumps(
            {
                "execution_id": "e",
                "request_id": "r",
                "execution_token": "t",
                "operation": "migrate_up",
                "database": "app",
                "environment": "production",
                "detail": '{"format":"v2"}',
                "lease_expires_at": "2026-05-01T12:01:00+00:00",
                "max_rows": 100,
            }
        )
    )

    assert claim.statement_timeout_secs is None
    assert claim.max_rows == 100
    assert claim.execution_plan is None
    assert claim.execution_plan_json is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"statement_timeout_secs": "30"}, "statement_timeout_secs"),
        ({"max_rows": -1}, "max_rows"),
        ({"execution_plan": "SELECT 1"}, "execution_plan"),
        ({"execution_plan_json": ["SELECT 1"]}, "execution_plan_json"),
        ({"detail": None}, "detail"),
    ],
)
def test_claim_shape_errors_name_the_field(change: dict[str, object], field: str) -> None:
    body = {**orjson.loads(CLAIM_RESPONSE_EXAMPLE), **change}

    with pytest.raises(wire.WrongShapeError) as caught:
        wire.decode_claimed_job(orjson.dumps(body))

    assert caught.value.problems[0].location == field


def test_claim_reply_bytes_carry_every_key() -> None:
    claim = ClaimedJob(
        execution_id="exec-1",
        request_id="req-1",
        execution_token='{"request_id":"req-1"}',
        operation="migrate_status",
        database="app",
        environment="production",
        detail="",
        statement_timeout_secs=None,
        max_rows=None,
        lease_expires_at="2026-05-01T12:01:00.123456000+00:00",
    )

    assert wire.encode_claimed_job(claim) == (
        b'{"execution_id":"exec-1","request_id":"req-1",'
        b'"execution_token":"{\\"request_id\\":\\"req-1\\"}","operation":"migrate_status",'
        b'"database":"app","environment":"production","detail":"","statement_timeout_secs":null,'
        b'"max_rows":null,"lease_expires_at":"2026-05-01T12:01:00.123456000+00:00",'
        b'"execution_plan":null,"execution_plan_json":null}'
    )


def test_claim_body_asks_for_the_lease() -> None:
    assert wire.encode_claim_request(ClaimRequest(300)) == b'{"lease_duration_secs":300}'


def test_a_named_claim_body_adds_the_agent_id_after_the_lease() -> None:
    assert (
        wire.encode_claim_request(ClaimRequest(300, "prod-agent-1"))
        == b'{"lease_duration_secs":300,"agent_id":"prod-agent-1"}'
    )


@pytest.mark.parametrize("body", [b"", b"  \r\n"])
def test_a_bodiless_claim_asks_for_no_lease(body: bytes) -> None:
    assert wire.decode_claim_request(body) == ClaimRequest()


# --- heartbeat, dry-run claim, public key -------------------------------------------------


def test_heartbeat_reply() -> None:
    assert wire.encode_heartbeat_reply(HeartbeatReply(cancelled=False)) == b'{"cancelled":false}'
    assert wire.decode_heartbeat_reply(b'{"cancelled": true}') == HeartbeatReply(cancelled=True)
    assert wire.decode_heartbeat_reply(b'{"cancelled":false}') == HeartbeatReply(cancelled=False)
    for body in (b'{"cancelled": "false"}', b"{}"):
        with pytest.raises(wire.WrongShapeError) as caught:
            wire.decode_heartbeat_reply(body)
        assert caught.value.problems[0].location == "cancelled"


def test_dry_run_claim_reply() -> None:
    assert wire.encode_dry_run_claim("ct") == b'{"claim_token":"ct"}'
    assert wire.decode_dry_run_claim(b'{"claim_token":"ct"}') == "ct"
    with pytest.raises(wire.WrongShapeError) as caught:
        wire.decode_dry_run_claim(b'{"claim_token": null}')
    assert caught.value.problems[0].location == "claim_token"


def test_public_key_reply_is_stripped() -> None:
    assert wire.encode_public_key("ab") == b'{"public_key":"ab"}'
    assert wire.decode_public_key(b'{"public_key": " ab\\n"}') == "ab"


# --- result -----------------------------------------------------------------------------


def test_select_result_body() -> None:
    result = JobResult(
        success=True,
        result_data='{"rows":[],"truncated":false,"truncation_reason":null}',
        truncated=False,
        duration_ms=42,
    )

    assert wire.encode_job_result(result) == (
        b'{"success":true,"result_data":"{\\"rows\\":[],\\"truncated\\":false,'
        b'\\"truncation_reason\\":null}","truncated":false,"duration_ms":42}'
    )


def test_dml_result_body() -> None:
    result = JobResult(
        success=True, result_data='{"rows_affected":5}', rows_affected=5, duration_ms=7
    )

    assert wire.encode_job_result(result) == (
        b'{"success":true,"result_data":"{\\"rows_affected\\":5}","rows_affected":5,'
        b'"duration_ms":7}'
    )


def test_dml_result_body_with_returned_rows_only_adds_to_dbward_0_2_s() -> None:
    # The rows ride inside `result_data`; `truncated` is a field dbward 0.2 already has.
    data = (
        '{"rows_affected":1,"rows":[{"id":3}],"truncated":false,"truncation_reason":null,'
        '"columns":[{"name":"id","type":"int4"}]}'
    )
    result = JobResult(
        success=True, result_data=data, rows_affected=1, truncated=False, duration_ms=7
    )

    encoded = wire.encode_job_result(result)
    assert encoded == (
        b'{"success":true,"result_data":' + json.dumps(data).encode() + b',"rows_affected":1,'
        b'"truncated":false,"duration_ms":7}'
    )
    assert wire.decode_job_result(encoded) == result


def test_a_dbward_0_2_dml_result_decodes_without_rows_or_truncated() -> None:
    body = b'{"success":true,"result_data":"{\\"rows_affected\\":5}","rows_affected":5}'
    assert wire.decode_job_result(body) == JobResult(
        success=True, result_data='{"rows_affected":5}', rows_affected=5
    )


def test_failure_result_body() -> None:
    result = JobResult.failure("driver error: query timed out", duration_ms=30001)

    assert wire.encode_job_result(result) == (
        b'{"success":false,"error_message":"driver error: query timed out","duration_ms":30001}'
    )


def test_result_body_keeps_field_order_and_omits_only_none() -> None:
    every = JobResult(
        success=True,
        result_data="d",
        error_message="",
        rows_affected=0,
        truncated=True,
        total_rows=0,
        duration_ms=0,
    )

    assert wire.encode_job_result(every) == (
        b'{"success":true,"result_data":"d","error_message":"","rows_affected":0,'
        b'"truncated":true,"total_rows":0,"duration_ms":0}'
    )
    assert wire.encode_job_result(JobResult(success=False)) == b'{"success":false}'


def test_result_receipt_bytes() -> None:
    assert wire.encode_result_receipt(ResultReceipt("req-1", "executed")) == (
        b'{"request_id":"req-1","status":"executed"}'
    )


# --- schema sync, dry-run, preflight ------------------------------------------------------


def test_schema_sync_bodies() -> None:
    ready = SchemaReport(
        scope=Scope("app", "production"),
        dialect="postgresql",
        status="ready",
        snapshot={"tables": []},
    )
    failed = SchemaReport(
        scope=Scope("app", "staging"), dialect="mysql", status="failed", error_message="boom"
    )

    assert wire.encode_schema_report(ready) == (
        b'{"database":"app","environment":"production","dialect":"postgresql",'
        b'"status":"ready","snapshot":{"tables":[]},"error_message":null}'
    )
    assert wire.encode_schema_report(failed) == (
        b'{"database":"app","environment":"staging","dialect":"mysql",'
        b'"status":"failed","snapshot":null,"error_message":"boom"}'
    )


def test_dry_run_result_bodies() -> None:
    plan = [{"Plan": {"Node Type": "Result"}}]

    assert wire.encode_dry_run_result(DryRunResult("ct", ExplainOutcome(plan=plan))) == (
        b'{"claim_token":"ct","result":[{"Plan":{"Node Type":"Result"}}],"error":null}'
    )
    assert wire.encode_dry_run_result(DryRunResult("ct", ExplainOutcome(error="denied"))) == (
        b'{"claim_token":"ct","result":null,"error":"denied"}'
    )


def test_preflight_result_bodies_carry_exactly_one_of_result_and_error() -> None:
    plan = {"query_block": {"select_id": 1}}

    assert wire.encode_preflight_result(PreflightResult("pf", "ct", ExplainOutcome(plan=plan))) == (
        b'{"job_id":"pf","claim_token":"ct","result":{"query_block":{"select_id":1}}}'
    )
    failed = PreflightResult("pf", "ct", ExplainOutcome(error="no pool available for scope"))
    assert wire.encode_preflight_result(failed) == (
        b'{"job_id":"pf","claim_token":"ct","error":"no pool available for scope"}'
    )


# --- execution token (§4.1) ---------------------------------------------------------------

#: RFC 8032-style fixed seed 00 01 02 … 1f; Ed25519 signing is deterministic.
SEED = bytes(range(32))
PUBLIC_KEY_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
PLAN_JSON = '["SELECT 1"]'
EXPIRES_AT = "2030-01-01T00:00:00.000000000+00:00"
DETAIL_HASH = "a1879c30e1b528c8300b386d30c779597cb8d3c00df303e39f8e1994c6475760"
SIGNED_MESSAGE = (
    b"req-1|execute_select|production|app|"
    b"a1879c30e1b528c8300b386d30c779597cb8d3c00df303e39f8e1994c6475760|"
    b"2030-01-01T00:00:00.000000000+00:00|requester|alice"
)
SIGNATURE_HEX = (
    "8986734256735066403d8814b61265243d1ff7a8b151b1fe7ad9c4c206b55c88"
    "63d1472845cc43e19c25aaf655a6aaff8a4cc0c288fae32850a37ee499b13005"
)
BEFORE_EXPIRY = parse_rfc3339("2029-12-31T23:59:00+00:00")


def _token(**overrides: str) -> str:
    fields = {
        "request_id": "req-1",
        "operation": "execute_select",
        "environment": "production",
        "database": "app",
        "detail_hash": DETAIL_HASH,
        "issued_at": "2029-12-31T23:55:00.000000000+00:00",
        "expires_at": EXPIRES_AT,
        "signature": SIGNATURE_HEX,
        "requester_role": "requester",
        "requester_subject_id": "alice",
    }
    fields.update(overrides)
    return json.dumps(fields)


def _claim(token: str) -> ClaimedJob:
    return ClaimedJob(
        execution_id="exec-1",
        request_id="req-1",
        execution_token=token,
        operation="execute_select",
        database="app",
        environment="production",
        detail="SELECT 1",
        statement_timeout_secs=30,
        max_rows=None,
        lease_expires_at="2030-01-01T00:01:00.000000000+00:00",
        execution_plan=("SELECT 1",),
        execution_plan_json=PLAN_JSON,
    )


def _verifier() -> Ed25519Verifier:
    verifier = Ed25519Verifier()
    verifier.load_public_key(PUBLIC_KEY_HEX)
    return verifier


def test_fixed_seed_gives_the_known_public_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED).public_key()

    assert key.public_bytes_raw().hex() == PUBLIC_KEY_HEX


def test_token_golden_vector() -> None:
    digest = detail_hash("execute_select", "SELECT 1", PLAN_JSON)
    message = signed_message(
        request_id="req-1",
        operation="execute_select",
        environment="production",
        database="app",
        detail_hash=digest,
        expires_at=EXPIRES_AT,
        requester_role="requester",
        requester_subject_id="alice",
    )
    signature = Ed25519PrivateKey.from_private_bytes(SEED).sign(message)

    assert digest == DETAIL_HASH
    assert message == SIGNED_MESSAGE
    assert signature.hex() == SIGNATURE_HEX


def test_verifier_accepts_the_golden_token_and_rejects_any_one_byte_change() -> None:
    verifier = _verifier()

    token = verify_execution_token(
        _claim(_token()), now=BEFORE_EXPIRY, check_signature=verifier.verify
    )
    assert token.requester_subject_id == "alice"

    assert verifier.verify(bytes.fromhex(SIGNATURE_HEX), SIGNED_MESSAGE)
    assert not verifier.verify(bytes.fromhex(SIGNATURE_HEX), SIGNED_MESSAGE[:-1] + b"b")
    flipped = bytearray.fromhex(SIGNATURE_HEX)
    flipped[0] ^= 0x01
    assert not verifier.verify(bytes(flipped), SIGNED_MESSAGE)


def test_a_token_with_a_changed_signed_field_fails_verification() -> None:
    forged = _claim(_token(requester_subject_id="alicf"))

    with pytest.raises(TokenVerificationError, match="signature invalid"):
        verify_execution_token(forged, now=BEFORE_EXPIRY, check_signature=_verifier().verify)


def test_canonical_json_of_a_migrate_up_detail() -> None:
    detail = (
        '{"format": "v2", "direction": "up", "versions": ["20260501120000"], '
        '"migrations": [{"version": "20260501120000", '
        '"sql": "CREATE TABLE caf\\u00e9 (id int);\\n", "transactional": true}], '
        '"dir_sha256": "abc", "max_count": 1}'
    )

    assert canonical_json(json.loads(detail)) == (
        '{"dir_sha256":"abc","direction":"up","format":"v2","max_count":1,'
        '"migrations":[{"sql":"CREATE TABLE café (id int);\\n","transactional":true,'
        '"version":"20260501120000"}],"versions":["20260501120000"]}'
    )
    assert (
        detail_hash("migrate_up", detail, None)
        == "f9024bda420a1e512fa7c29094112315a05a4fbd8305f632aeac93d26ab1f50e"
    )


def test_poll_body_lists_degraded_scopes_after_the_reference_fields() -> None:
    """Additive: only present when a configured database is down."""
    request = replace(_poll_request(), degraded_scopes=(Scope("reports", "production"),))

    assert wire.encode_poll_request(request).endswith(
        b'"agent_build":"0.3.0.dev0","degraded_scopes":'
        b'[{"database":"reports","environment":"production"}]}'
    )
