"""The MCP tool layer over a fake API (docs/mcp.md): what each tool asks and answers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import pytest
from mcp import Client

from adapters.cli_client.api_client import ApiError, JsonObject, Page
from adapters.mcp.server import build_mcp_server
from adapters.mcp.tools import DbwardApi, DbwardTools, ToolFailure, fingerprint_with
from adapters.sql_review.sqlglot_classifier import SqlglotClassifier
from domain.server.sql_classification import REDACTION_FAILED


class FakeApi:
    """Requests in a dict; each `get_request(…, wait_secs)` moves a request one step along
    its scripted statuses, as a long-poll answering a change would."""

    def __init__(self) -> None:
        self.requests: dict[str, JsonObject] = {}
        self.script: dict[str, list[str]] = {}
        self.created: list[JsonObject] = []
        self.resumed: list[str] = []
        self.refuse_create: ApiError | None = None
        self.results: dict[str, JsonObject] = {}

    def add(self, request_id: str, **fields: Any) -> JsonObject:
        request = {"id": request_id, "operation": "execute_select", **fields}
        self.requests[request_id] = request
        return request

    def create_request(self, body: JsonObject) -> JsonObject:
        if self.refuse_create is not None:
            raise self.refuse_create
        self.created.append(body)
        request_id = f"r{len(self.created)}"
        status = self.script.pop("next", ["dispatched"])
        self.add(
            request_id,
            status=status[0],
            database=body["database"],
            environment=body["environment"],
            detail=body["detail"],
            approvers=["role:approver"] if status[0] == "pending" else [],
        )
        self.script[request_id] = status[1:]
        return dict(self.requests[request_id])

    def get_request(self, request_id: str, wait_secs: int | None = None) -> JsonObject:
        if request_id not in self.requests:
            raise ApiError(404, "request.not_found", f"not found: {request_id}")
        steps = self.script.get(request_id)
        if wait_secs is not None and steps:
            self.requests[request_id]["status"] = steps.pop(0)
        return dict(self.requests[request_id])

    def list_requests(self, filters: Mapping[str, str]) -> Page:
        items = [
            r
            for r in self.requests.values()
            if "status" not in filters or r.get("status") == filters["status"]
        ]
        offset = int(filters.get("offset", "0"))
        limit = int(filters.get("limit", "50"))
        return Page(items[offset : offset + limit], len(items), offset)

    def resume_request(self, request_id: str, reason: str | None = None) -> JsonObject:
        self.resumed.append(request_id)
        self.requests[request_id]["status"] = "dispatched"
        return {"id": request_id, "status": "dispatched"}

    def request_result_stream(self, request_id: str) -> JsonObject | None:
        return self.results.get(request_id)

    def preflight(self, body: JsonObject) -> JsonObject:
        return {
            "status": "blocked",
            "blockers": [{"code": "no_where", "message": "DELETE without WHERE"}],
            "fix_hints": ["add a WHERE clause"],
            "sql": body["sql"],
        }

    def schema(
        self, database: str, environment: str, *, table: str | None = None, summary: bool = False
    ) -> JsonObject:
        return {
            "database": database,
            "environment": environment,
            "table": table,
            "summary": summary,
        }

    def audit_events(self, filters: Mapping[str, str]) -> list[JsonObject]:
        return [{"event_type": "request.created", "limit": filters["limit"]}]


class Clock:
    """A monotonic clock that moves only when the tools sleep or a long-poll is asked."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, secs: float) -> None:
        self.now += secs


def fingerprint() -> Any:
    return fingerprint_with(SqlglotClassifier().redact)


def tools(api: FakeApi, clock: Clock | None = None) -> DbwardTools:
    clock = clock or Clock()
    return DbwardTools(
        api,
        fingerprint=fingerprint(),
        default_environment="development",
        monotonic=clock,
        sleep=clock.sleep,
    )


def test_an_auto_approved_query_is_followed_to_its_rows() -> None:
    api = FakeApi()
    api.script["next"] = ["dispatched", "running", "executed"]
    api.results["r1"] = {
        "success": True,
        "rows_affected": 1,
        "truncated": False,
        "result_data": json.dumps({"rows": [{"answer": 42}]}),
    }
    answer = json.loads(tools(api).execute_query("SELECT 42 AS answer", "app", "dev", "why"))
    assert api.created == [
        {"database": "app", "environment": "dev", "detail": "SELECT 42 AS answer", "reason": "why"}
    ]
    assert answer["status"] == "executed"
    assert answer["result"] == {"rows": [{"answer": 42}]}


def test_a_pending_request_names_its_approvers_and_never_carries_a_result() -> None:
    api = FakeApi()
    api.script["next"] = ["pending"]
    answer = json.loads(tools(api).execute_query("DELETE FROM t WHERE id = 1", "app", "prod"))
    assert answer["status"] == "pending"
    assert answer["approvers"] == ["role:approver"]
    assert "result" not in answer


def test_execute_query_never_asks_for_break_glass() -> None:
    api = FakeApi()
    api.results["r1"] = {"success": True, "result_data": None}
    api.script["next"] = ["executed"]
    tools(api).execute_query("SELECT 1", "app", "dev")
    assert not {"emergency", "allow_ddl"} & set(api.created[0])


def test_waiting_runs_an_approved_request_by_resuming_it_once() -> None:
    api = FakeApi()
    api.add("r9", status="pending", database="app", environment="prod")
    api.script["r9"] = ["approved"]
    api.results["r9"] = {"success": True, "result_data": {"rows": []}}

    def finish_after_resume(request_id: str, reason: str | None = None) -> JsonObject:
        api.resumed.append(request_id)
        api.requests[request_id]["status"] = "executed"
        return {}

    api.resume_request = finish_after_resume  # type: ignore[method-assign]
    answer = json.loads(tools(api).wait_request("r9", timeout=30))
    assert api.resumed == ["r9"]
    assert answer["status"] == "executed"
    assert answer["result"] == {"rows": []}


def test_waiting_ends_at_the_timeout_with_the_status_it_saw() -> None:
    api = FakeApi()
    api.add("r9", status="pending")
    clock = Clock()
    answer = json.loads(tools(api, clock).wait_request("r9", timeout=2))
    assert answer == {
        "request_id": "r9",
        "status": "pending",
        "database": None,
        "environment": None,
        "timed_out": True,
    }
    assert clock.now >= 2


def test_a_wait_longer_than_the_server_holds_is_refused() -> None:
    with pytest.raises(ToolFailure, match="timeout"):
        tools(FakeApi()).wait_request("r1", timeout=301)


def test_explaining_a_request_gives_its_trace_and_the_preflight_of_its_sql() -> None:
    api = FakeApi()
    api.add(
        "r1",
        status="pending",
        detail="DELETE FROM t",
        database="app",
        environment="prod",
        approvers=["role:dba"],
        decision_trace={"decision": {"outcome": "needs_approval"}},
    )
    answer = json.loads(tools(api).explain_policy_failure(request_id="r1"))
    assert answer["decision_trace"] == {"decision": {"outcome": "needs_approval"}}
    assert answer["approvers"] == ["role:dba"]
    assert answer["preflight"]["blockers"][0]["code"] == "no_where"


def test_explaining_needs_a_request_or_sql_with_its_scope() -> None:
    with pytest.raises(ToolFailure, match="request_id"):
        tools(FakeApi()).explain_policy_failure(sql="SELECT 1")


def test_similar_requests_match_by_redacted_fingerprint_before_text() -> None:
    api = FakeApi()
    api.add("same", status="executed", database="app", detail="SELECT * FROM users WHERE id = 7")
    api.add("close", status="executed", database="app", detail="SELECT * FROM users WHERE ok")
    api.add("other", status="executed", database="app", detail="UPDATE orders SET x = 1")
    api.add(
        "elsewhere", status="executed", database="crm", detail="SELECT * FROM users WHERE id = 1"
    )
    found = json.loads(
        tools(api).find_similar_requests("select * from users where id = 42", database="app")
    )
    assert [(m["id"], m["match"]) for m in found] == [
        ("same", "fingerprint"),
        ("close", "similar_text"),
    ]


def test_unparseable_sql_has_no_fingerprint_so_it_never_matches_by_one() -> None:
    assert SqlglotClassifier().redact("SELEC FROM (", "postgresql") == REDACTION_FAILED
    assert fingerprint()("SELEC FROM (") is None


def test_the_schema_defaults_to_the_configured_environment_and_lists_tables() -> None:
    answer = json.loads(tools(FakeApi()).inspect_schema("app"))
    assert answer == {
        "database": "app",
        "environment": "development",
        "table": None,
        "summary": True,
    }


def test_the_schema_without_any_environment_is_a_tool_failure() -> None:
    bare = DbwardTools(FakeApi(), fingerprint=fingerprint())
    with pytest.raises(ToolFailure, match="environment"):
        bare.inspect_schema("app")


# --- through the MCP server (the SDK's in-memory client) ---------------------------------


def serve(api: DbwardApi) -> Any:
    @contextlib.contextmanager
    def open_api(_ctx: object) -> Iterator[DbwardApi]:
        yield api

    return build_mcp_server(open_api, version="test", fingerprint=fingerprint())


def test_an_api_refusal_becomes_a_tool_error_with_the_server_s_message() -> None:
    api = FakeApi()
    api.refuse_create = ApiError(403, "forbidden", "forbidden", "check your role permissions")

    async def call() -> Any:
        async with Client(serve(api)) as client:
            return await client.call_tool(
                "dbward_execute_query", {"sql": "SELECT 1", "database": "a", "environment": "b"}
            )

    result = anyio.run(call)
    assert result.is_error
    assert "forbidden" in result.content[0].text
    assert "check your role permissions" in result.content[0].text


def test_the_server_offers_no_approval_and_no_break_glass() -> None:
    async def listing() -> tuple[set[str], dict[str, Any]]:
        async with Client(serve(FakeApi())) as client:
            tools = (await client.list_tools()).tools
            execute = next(t for t in tools if t.name == "dbward_execute_query")
            return {t.name for t in tools}, execute.input_schema["properties"]

    names, execute_args = anyio.run(listing)
    # Reading who may approve, yes; approving, rejecting or break-glass, no.
    assert names == {
        "dbward_execute_query",
        "dbward_wait_request",
        "dbward_list_pending",
        "dbward_who_can_approve",
        "dbward_explain_policy_failure",
        "dbward_find_similar_requests",
        "dbward_inspect_schema",
        "dbward_migrate_status",
        "dbward_preflight",
    }
    assert set(execute_args) == {"sql", "database", "environment", "reason"}


def test_resources_read_through_the_caller_s_api() -> None:
    api = FakeApi()
    api.add("r1", status="pending", approvers=["role:approver"])

    async def read() -> tuple[str, str, str]:
        async with Client(serve(api)) as client:
            pending = await client.read_resource("dbward://pending")
            one = await client.read_resource("dbward://requests/r1")
            audit = await client.read_resource("dbward://audit/recent?limit=5")
            return (
                pending.contents[0].text,  # type: ignore[union-attr]
                one.contents[0].text,  # type: ignore[union-attr]
                audit.contents[0].text,  # type: ignore[union-attr]
            )

    pending, one, audit = anyio.run(read)
    assert [r["id"] for r in json.loads(pending)] == ["r1"]
    assert json.loads(one)["status"] == "pending"
    assert json.loads(audit) == [{"event_type": "request.created", "limit": "5"}]
