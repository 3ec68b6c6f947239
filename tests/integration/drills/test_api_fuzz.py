"""Schemathesis over the server's own OpenAPI document, against a real `dbward server`.

Every operation /openapi.json lists is called with generated input, valid and invalid,
with real credentials: an admin token for the user API, an agent token made with
`dbward token create` for the agent API (docs/protocol.md §2.1). No answer may be a 5xx,
and every 4xx must be the JSON error body of docs/protocol.md §2.4, `{"error", "code"}`.

Each operation is fuzzed twice: with generated ids (mostly 404s) and, where its path names
a request or an execution, with real ones, so generated bodies reach the use cases.

The run is deterministic (derandomized) and bounded: a fixed number of examples per
operation and mode, a deadline per example, a timeout per call, and long-polls cut short
(an agent poll's `wait_ms`, a request read's `?wait=`; the server may hold either for a
minute or more, docs/protocol.md §11, docs/server.md §1.6).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode

from tests.integration.drills.processes import create
from tests.integration.test_end_to_end import ServerProcess

pytestmark = pytest.mark.integration

#: Examples per operation and generation mode (valid input, input breaking the document).
EXAMPLES_PER_OPERATION = 8
#: The longest hold a generated agent poll may ask for, in ms.
MAX_POLL_WAIT_MS = 50
#: The longest `?wait=` a generated request read may ask for, in s.
MAX_REQUEST_WAIT_SECS = 0
CALL_TIMEOUT_SECS = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("fuzz")).start()
    yield process
    assert process.stop() == 0, process.log_path.read_text()


def _uses_agent_token(path: str) -> bool:
    """Agent tokens serve `/api/agent/…` and the public key (docs/protocol.md §2.1)."""
    return path.startswith("/api/agent/") or path == "/api/public-key"


def _bounded(case: Case) -> Case:
    """The case, with its long-polls cut short: an agent poll's hold to MAX_POLL_WAIT_MS,
    a request's `?wait=` to MAX_REQUEST_WAIT_SECS."""
    body, query = case.body, case.query
    if case.operation.path == "/api/agent/poll" and isinstance(body, dict):
        wait_ms = body.get("wait_ms")
        if isinstance(wait_ms, int) and not isinstance(wait_ms, bool):
            body["wait_ms"] = min(wait_ms, MAX_POLL_WAIT_MS)
    if case.operation.path == "/api/requests/{request_id}" and isinstance(query, dict):
        wait = query.get("wait")
        if isinstance(wait, int) and not isinstance(wait, bool):
            query["wait"] = min(wait, MAX_REQUEST_WAIT_SECS)
    return case


def problem_with(status: int, content_type: str, text: str) -> str | None:
    """Why an answer breaks the API's error rules, or None when it keeps them."""
    if status >= 500:
        return f"server error {status}"
    if status < 400:
        return None
    if not content_type.startswith("application/json"):
        return f"{status} answered as {content_type or 'no content type'}"
    try:
        body: Any = json.loads(text)
    except ValueError:
        return f"{status} with a body that is not JSON"
    if not (
        isinstance(body, dict)
        and isinstance(body.get("error"), str)
        and isinstance(body.get("code"), str)
    ):
        return f"{status} without the error envelope"
    return None


def test_problem_with_refuses_server_errors_and_bare_client_errors() -> None:
    assert problem_with(200, "application/json", "{}") is None
    assert problem_with(404, "application/json", '{"error":"x","code":"y","hint":null}') is None
    assert problem_with(500, "application/json", '{"error":"x","code":"y"}') is not None
    assert problem_with(400, "text/plain", "Bad Request") is not None
    assert problem_with(422, "application/json", '{"detail":[]}') is not None
    assert problem_with(404, "application/json", "not json") is not None


def test_openapi_document_lists_every_route_with_its_body_and_error_envelope(
    server: ServerProcess,
) -> None:
    document = server.client().get("/openapi.json").json()
    without_body = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "put", "patch")
        and "requestBody" not in operation
        and not path.endswith(("/heartbeat", "/dry-run/{job_id}/claim"))
        and not path.startswith("/api/users/{user_id}/")
    ]
    assert without_body == []
    # Every refusal is documented as the error envelope, never FastAPI's 422 `detail` list.
    assert "HTTPValidationError" not in json.dumps(document)
    refusals = {
        operation["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"]
        for operations in document["paths"].values()
        for operation in operations.values()
    }
    assert refusals == {"#/components/schemas/ErrorBody"}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error", "code", "hint"]
    poll = document["paths"]["/api/agent/poll"]["post"]["requestBody"]
    assert poll["required"] is True
    schema = poll["content"]["application/json"]["schema"]
    assert schema["required"] == ["capabilities"]
    assert "$ref" not in json.dumps(schema)


def _fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    url: str,
    token: str,
    failures: dict[str, str],
    seen: Counter[int],
    path_parameters: dict[str, str] | None = None,
) -> None:
    """Call `operation` with generated cases (with `path_parameters` fixed, when given);
    count the statuses, record the first problem per operation and status."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=timedelta(seconds=CALL_TIMEOUT_SECS + 5),
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def call(case: Case) -> None:
        response = _bounded(case).call(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=CALL_TIMEOUT_SECS
        )
        content_type = response.headers.get("content-type", [""])[0]
        problem = problem_with(response.status_code, content_type, response.text)
        seen[response.status_code // 100 * 100] += 1
        fixed = " (real ids)" if path_parameters else ""
        key = f"{operation.label}{fixed} {response.status_code}"
        if problem is not None and key not in failures:
            failures[key] = f"{problem}: {response.text[:300]}\n  {case.as_curl_command()}"

    try:
        call()
    except Unsatisfiable:
        # Only invalid input can be impossible: an operation whose inputs are all free
        # strings (or that takes none) has no input the document refuses.
        assert mode is GenerationMode.NEGATIVE, operation.label


def _real_ids(server: ServerProcess, agent_token: str) -> dict[str, dict[str, str]]:
    """Path parameters naming real objects, so generated input reaches past the 404s:
    a dispatched request for the user routes, another for the agent's claim, and the
    execution of a third, claimed by the agent, for heartbeats and results."""
    with server.client() as http:
        ids = [create(http, "SELECT 1 AS one") for _ in range(3)]
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {agent_token}"}, timeout=30
    ) as agent:
        scopes = {"scopes": [{"database": "app", "environment": "pg"}]}
        polled = agent.post("/api/agent/poll", json={"capabilities": scopes, "limit": 0})
        assert polled.status_code == 200, polled.text
        claimed = agent.post(f"/api/agent/jobs/{ids[2]}/claim", json={})
        assert claimed.status_code == 200, claimed.text
    return {
        "user": {"request_id": ids[0]},
        "claim": {"request_id": ids[1]},
        "execution": {"execution_id": claimed.json()["execution_id"]},
    }


def _real_ids_for(path: str, real: dict[str, dict[str, str]]) -> dict[str, str] | None:
    if path.endswith("/result/stream"):
        return None  # waits up to 300 s for a result that no agent will bring
    if path.startswith("/api/agent/jobs/{request_id}"):
        return real["claim"]
    if "{execution_id}" in path and path.startswith("/api/agent/"):
        return real["execution"]
    if path.startswith("/api/requests/{request_id}"):
        return real["user"]
    return None


def test_every_operation_answers_without_5xx_and_with_json_errors(server: ServerProcess) -> None:
    agent_token = server.create_agent_token("fuzz-agent")
    real = _real_ids(server, agent_token)
    tokens = {True: agent_token, False: server.admin_token}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: dict[str, str] = {}
    seen: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, "the document lost operations"

    for operation in operations:
        token = tokens[_uses_agent_token(operation.path)]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, server.url, token, failures, seen)
            fixed = _real_ids_for(operation.path, real)
            if fixed is not None:
                _fuzz(operation, mode, server.url, token, failures, seen, fixed)

    assert server.proc is not None and server.proc.poll() is None, "the server died"
    # Real answers came back: the credentials work (2xx) and bad input reached the routes.
    assert seen[200] > 30 and seen[400] > 200, seen
    assert failures == {}, "\n".join(f"{key}: {why}" for key, why in failures.items())


def test_the_fuzzed_server_still_serves_its_admin(server: ServerProcess) -> None:
    """The run above must not have locked the admin out (it may delete and revoke)."""
    assert server.client().get("/api/me").status_code == 200
