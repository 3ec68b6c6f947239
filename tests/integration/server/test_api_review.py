"""SQL review over the HTTP API: a server.toml with `[[sql_review]]` read by the real loader,
the real FastAPI app over a real store, and the request API (docs/sql-safety.md §5-§6).

The scripted-classifier tests pin the API's behaviour on exactly the facts they name; the
real-classifier tests check that the sqlglot adapter's facts reach the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.config.server import load_server_settings
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from application.server.ports.services import SqlClassifier
from domain.server.review_rules import ReviewRule
from domain.server.sql_classification import StatementClass
from tests.fakes.sql_classifier import ScriptedClassifier, hit, statement
from tests.integration.server.test_api_approvals import h, make_app
from tests.unit.application.server.test_requests_and_claims import (
    ALICE,
    MutableClock,
    ServerHarness,
    build_harness,
)

pytestmark = pytest.mark.integration

SERVER_TOML = """
state_dir = "state"

[[databases]]
name = "app"
environments = ["staging", "production"]

[[workflows]]
database = "app"
[workflows.auto_approve]
mode = "always"

[[sql_review]]
database = "app"
environment = "production"
large_in_list = "block"

[[sql_review]]
database = "app"
environment = "staging"
no_where_delete = "warn"
"""


def harness_with(tmp_path: Path, classifier: SqlClassifier) -> ServerHarness:
    path = tmp_path / "server.toml"
    path.write_text(SERVER_TOML, encoding="utf-8")
    (tmp_path / "state").mkdir()
    settings = load_server_settings(path, {})
    return build_harness(tmp_path, settings, MutableClock(datetime.now(UTC)), classifier=classifier)


@pytest.fixture
def scripted() -> ScriptedClassifier:
    return ScriptedClassifier(SqlglotClassifier())


@pytest.fixture
def client(tmp_path: Path, scripted: ScriptedClassifier) -> Iterator[TestClient]:
    harness = harness_with(tmp_path, scripted)
    with TestClient(make_app(harness)) as test_client:
        yield test_client
    harness.close()


@pytest.fixture
def real_client(tmp_path: Path) -> Iterator[TestClient]:
    harness = harness_with(tmp_path, SqlglotClassifier())
    with TestClient(make_app(harness)) as test_client:
        yield test_client
    harness.close()


def post(client: TestClient, sql: str, environment: str = "production") -> Any:
    return client.post(
        "/api/requests",
        json={"database": "app", "environment": environment, "detail": sql},
        headers=h(ALICE),
    )


def test_a_block_is_a_400_naming_every_blocking_finding(
    client: TestClient, scripted: ScriptedClassifier
) -> None:
    sql = "DELETE FROM a; SELECT 1 WHERE x IN (1)"
    scripted.script(
        sql,
        statement(
            tables=("a",),
            hits=(hit(ReviewRule.NO_WHERE_DELETE, "DELETE FROM a has no WHERE clause"),),
        ),
        statement(
            StatementClass.SELECT,
            hits=(hit(ReviewRule.LARGE_IN_LIST, "IN list of 150 items"),),
        ),
    )
    response = post(client, sql)
    assert response.status_code == 400
    assert response.json()["code"] == "validation.failed"
    assert response.json()["error"] == (
        "validation: SQL blocked by review: statement 1: DELETE FROM a has no WHERE clause; "
        "statement 2: IN list of 150 items"
    )


def test_a_warning_of_the_scope_s_policy_is_shown_with_the_request(
    client: TestClient, scripted: ScriptedClassifier
) -> None:
    scripted.script(
        "DELETE FROM a",
        statement(
            tables=("a",), deletes=("a",), hits=(hit(ReviewRule.NO_WHERE_DELETE, "no WHERE"),)
        ),
    )
    response = post(client, "DELETE FROM a", environment="staging")
    assert response.status_code == 201, response.text
    detail = client.get(f"/api/requests/{response.json()['id']}", headers=h(ALICE)).json()
    context = detail["context"]
    assert context["tables"] == ["a"]
    assert context["sql_review"] == {
        "policy_id": "sr:app:staging",
        "findings": [
            {"code": "no_where_delete", "action": "warn", "message": "no WHERE", "statement": 1}
        ],
        "blocked": False,
    }
    assert context["risk"] == {
        "level": "unknown",
        "factors": [{"code": "schema_not_synced", "detail": "not_synced"}],
    }
    assert "explain" in context and "status" in context
    trace = detail["decision_trace"]
    assert trace["sql_review"]["findings_count"] == 1
    assert trace["decision"]["rule"] == "always"


# --- with the sqlglot classifier's facts -----------------------------------------------------


def test_the_real_classifier_s_blocks_are_named_in_the_400(real_client: TestClient) -> None:
    response = post(real_client, "DELETE FROM orders; UPDATE accounts SET plan = 'x'")
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith("validation: SQL blocked by review: statement 1: ")
    assert "orders" in message and "accounts" in message
    assert "; statement 2: " in message


def test_the_real_classifier_s_warning_travels_with_the_request(real_client: TestClient) -> None:
    response = post(real_client, "DELETE FROM orders", environment="staging")
    assert response.status_code == 201, response.text
    context = real_client.get(f"/api/requests/{response.json()['id']}", headers=h(ALICE)).json()[
        "context"
    ]
    assert context["tables"] == ["orders"]
    assert [f["code"] for f in context["sql_review"]["findings"]] == ["no_where_delete"]
    assert json.dumps(context["sql_review"]).count("warn") == 1
