"""The agent's reading of a claim: only signed statements run."""

from __future__ import annotations

import pytest

from domain.agent.errors import TokenVerificationError
from domain.agent.token_verification import sql_to_execute
from domain.shared.jobs import ClaimedJob


def _claim(detail: str, plan_json: str | None) -> ClaimedJob:
    return ClaimedJob(
        execution_id="e1",
        request_id="r1",
        execution_token="{}",
        operation="execute_select",
        database="app",
        environment="production",
        detail=detail,
        statement_timeout_secs=30,
        max_rows=None,
        lease_expires_at="2030-01-01T00:01:00+00:00",
        execution_plan=("DROP TABLE unsigned",),
        execution_plan_json=plan_json,
    )


def test_sql_to_execute_joins_the_signed_plan_and_ignores_the_unsigned_copy() -> None:
    claim = _claim("SELECT 1; SELECT 2", '["SELECT 1","SELECT 2"]')
    assert sql_to_execute(claim) == "SELECT 1;\nSELECT 2"


def test_sql_to_execute_falls_back_to_the_detail_without_a_plan() -> None:
    assert sql_to_execute(_claim("SELECT 3", None)) == "SELECT 3"


@pytest.mark.parametrize("plan_json", ["[not json", '{"a":1}', '["a", 2]'])
def test_malformed_plan_json_is_a_token_verification_error(plan_json: str) -> None:
    with pytest.raises(TokenVerificationError, match="malformed execution_plan_json"):
        sql_to_execute(_claim("SELECT 1", plan_json))
