"""`dbward audit …` through typer's CliRunner over the fake API of the token/user CLI tests."""

from __future__ import annotations

import json

import pytest

from tests.unit.entrypoints.admin import test_token_user_cli as shared
from tests.unit.entrypoints.admin.test_token_user_cli import FakeApi, run

# The token/user CLI tests' fixtures: an isolated home and a fake API the CLI is connected to.
isolated = pytest.fixture(autouse=True)(shared.isolated.__wrapped__)  # type: ignore[attr-defined]
api = pytest.fixture(shared.api.__wrapped__)  # type: ignore[attr-defined]
connected = pytest.fixture(shared.connected.__wrapped__)  # type: ignore[attr-defined]

ANCHOR = "a1.MTJ8ZXYtMTJ8" + "A" * 20
HEAD = {
    "event_id": "ev-12",
    "event_hash": "ab" * 32,
    "position": 12,
    "created_at": "2030-01-01T00:00:00.000000Z",
    "signed_message": "dbward-audit-anchor:v1|12|ev-12|" + "ab" * 32,
    "signature": "cd" * 64,
    "key_id": "ed25519:0123456789abcdef",
    "public_key": "ef" * 32,
    "anchor": ANCHOR,
}


def test_head_prints_only_the_anchor_on_stdout(connected: FakeApi) -> None:
    connected.on("GET", "/api/audit/head", 200, HEAD)
    result = run("audit", "head")
    assert result.exit_code == 0, result.output
    assert result.stdout == ANCHOR + "\n"
    assert "ev-12" in result.stderr and "12" in result.stderr


def test_head_in_json_mode_is_the_envelope(connected: FakeApi) -> None:
    connected.on("GET", "/api/audit/head", 200, HEAD)
    result = run("audit", "head", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"ok": True, "data": HEAD}
    assert result.stderr == ""


def test_verify_with_an_anchor_sends_it_and_reports(connected: FakeApi) -> None:
    verdict = {
        "total_events": 40,
        "first_broken_id": None,
        "valid": True,
        "reason": None,
        "anchor_verified": True,
    }
    connected.on("GET", "/api/audit/verify", 200, verdict)
    result = run("audit", "--verify", "--anchor", ANCHOR)
    assert result.exit_code == 0, result.output
    assert connected.requests[0].url.params["anchor"] == ANCHOR
    assert "anchor verified" in result.stdout and "40" in result.stdout


def test_a_broken_chain_exits_1_naming_the_event(connected: FakeApi) -> None:
    connected.on(
        "GET",
        "/api/audit/verify",
        200,
        {
            "total_events": 40,
            "first_broken_id": "ev-12",
            "valid": False,
            "reason": "anchor_mismatch",
            "anchor_verified": False,
        },
    )
    result = run("audit", "--verify", "--anchor", ANCHOR, "--format", "json")
    assert result.exit_code == 1
    envelope = json.loads(result.stdout)
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == "audit_chain_broken"
    assert "ev-12" in envelope["error"]["message"]
    assert "anchor_mismatch" in envelope["error"]["message"]


def test_verify_without_an_anchor_sends_none(connected: FakeApi) -> None:
    connected.on(
        "GET",
        "/api/audit/verify",
        200,
        {"total_events": 3, "first_broken_id": None, "valid": True, "reason": None},
    )
    result = run("audit", "--verify")
    assert result.exit_code == 0
    assert "anchor" not in connected.requests[0].url.params


def test_a_refused_anchor_is_an_error(connected: FakeApi) -> None:
    connected.on(
        "GET",
        "/api/audit/verify",
        400,
        {"error": "validation: bad", "code": "validation.failed", "hint": "bad"},
    )
    result = run("audit", "--verify", "--anchor", "nonsense")
    assert result.exit_code == 1
    assert "validation" in result.stderr


def test_anchor_without_verify_is_a_usage_error(connected: FakeApi) -> None:
    result = run("audit", "--anchor", ANCHOR)
    assert result.exit_code == 2
    assert connected.requests == []


def test_listing_sends_the_filters(connected: FakeApi) -> None:
    connected.on(
        "GET",
        "/api/audit/events",
        200,
        {
            "events": [
                {
                    "created_at": "2030-01-01T00:00:00.000000Z",
                    "event_type": "user.created",
                    "outcome": "success",
                    "actor_id": "admin",
                    "resource_id": "alice",
                    "reason": None,
                }
            ]
        },
    )
    result = run(
        "audit", "--limit", "5", "--user", "admin", "--event-type", "user.created",
        "--category", "identity", "--outcome", "success", "--since", "2030-01-01T00:00:00Z",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert dict(connected.requests[0].url.params) == {
        "limit": "5",
        "actor_id": "admin",
        "event_type": "user.created",
        "event_category": "identity",
        "outcome": "success",
        "since": "2030-01-01T00:00:00Z",
    }
    assert "user.created" in result.stdout and "alice" in result.stdout
