"""What each dbward MCP tool, resource and prompt does (docs/mcp.md), written once.

Every tool is a call (or a few) to the dbward REST API through `DbwardApi`, the part of
the CLI's `ApiClient` the tools use. `dbward mcp` (stdio) gives it an `ApiClient` talking
to the server over the network; the server's own `/mcp` gives it an `ApiClient` whose
transport serves the call in-process with the same FastAPI app. Either way the API
authenticates the caller's token and authorizes, reviews, scores and audits every call
as it does for any client; nothing here decides who may do what.

Tools answer JSON text; an API refusal leaves as `ApiError` and becomes a tool error in
`adapters.mcp.server`. Nothing here approves, rejects or asks for break-glass: MCP does
not offer those (docs/mcp.md §5).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from adapters.cli_client.api_client import ApiError, JsonObject, Page
from adapters.cli_client.request_states import DISPATCHABLE, ENDED, FINISHED
from domain.server.sql_classification import REDACTION_FAILED

__all__ = ["DbwardApi", "DbwardTools", "Fingerprint", "ToolFailure", "fingerprint_with"]

#: How long `dbward_execute_query` and `dbward_migrate_status` wait for a result.
EXECUTE_WAIT_SECS = 60.0
#: The longest `timeout` `dbward_wait_request` accepts (the server holds a wait 300 s at most).
MAX_WAIT_SECS = 300.0
#: One `GET /api/requests/{id}?wait=` at most this long: below the API client's read timeout.
LONG_POLL_SECS = 20
#: The least time between two status reads when the server answers at once without news.
MIN_PAUSE_SECS = 0.5
#: How many of the caller's visible requests `dbward_find_similar_requests` compares.
SIMILAR_SCAN_LIMIT = 500
SIMILAR_PAGE = 100
#: Text similarity (0..1) from which two statements count as similar.
SIMILAR_TEXT_RATIO = 0.6
MAX_SIMILAR = 50
#: How many pending requests and audit events the listings give by default.
PENDING_LIMIT = 100
AUDIT_LIMIT = 50
#: The operations whose detail is SQL (a migration's detail is a manifest).
_SQL_OPERATIONS = frozenset({"", "execute_select", "execute_dml", "execute_ddl"})
_SPACE = re.compile(r"\s+")


class DbwardApi(Protocol):
    """The REST calls the tools make (docs/server.md §8.2, docs/preflight.md §7)."""

    def create_request(self, body: JsonObject) -> JsonObject: ...

    def get_request(self, request_id: str, wait_secs: int | None = None) -> JsonObject: ...

    def list_requests(self, filters: Mapping[str, str]) -> Page: ...

    def resume_request(self, request_id: str, reason: str | None = None) -> JsonObject: ...

    def request_result_stream(self, request_id: str) -> JsonObject | None: ...

    def preflight(self, body: JsonObject) -> JsonObject: ...

    def schema(
        self, database: str, environment: str, *, table: str | None = None, summary: bool = False
    ) -> JsonObject: ...

    def audit_events(self, filters: Mapping[str, str]) -> list[JsonObject]: ...


class ToolFailure(Exception):
    """A tool cannot answer for a reason of its own (not the API's): bad arguments."""


#: SQL → its literal-redacted fingerprint, or None when it cannot be redacted.
Fingerprint = Callable[[str], str | None]
#: The dialects a fingerprint is tried in, in order (the server's default first).
_FINGERPRINT_DIALECTS = ("postgresql", "mysql")


def fingerprint_with(redact: Callable[[str, str], str]) -> Fingerprint:
    """The audit log's literal redaction (`SqlClassifier.redact`, docs/server.md §6.5) as a
    fingerprint: the first dialect that parses the SQL gives it; none, no fingerprint (so
    two unparseable texts never count as the same)."""

    def fingerprint(sql: str) -> str | None:
        for dialect in _FINGERPRINT_DIALECTS:
            redacted = redact(sql, dialect)
            if redacted and redacted != REDACTION_FAILED:
                return redacted
        return None

    return fingerprint


def _text(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)


def _approvers(request: JsonObject) -> list[Any]:
    progress = request.get("approval_progress")
    awaiting = progress.get("awaiting") if isinstance(progress, dict) else None
    return list(request.get("approvers") or request.get("next_approvers") or awaiting or [])


class DbwardTools:
    """The tools over one API client, i.e. one caller's token."""

    def __init__(
        self,
        api: DbwardApi,
        *,
        fingerprint: Fingerprint,
        default_environment: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api
        self._fingerprint = fingerprint
        self._default_environment = default_environment
        self._monotonic = monotonic
        self._sleep = sleep

    # --- tools ---------------------------------------------------------------------------

    def execute_query(
        self, sql: str, database: str, environment: str, reason: str | None = None
    ) -> str:
        """Submit SQL as `POST /api/requests` does; wait for the result only if it may run."""
        body: JsonObject = {"database": database, "environment": environment, "detail": sql}
        if reason:
            body["reason"] = reason
        return _text(self._submitted(self._api.create_request(body)))

    def migrate_status(self, database: str, environment: str) -> str:
        """A `migrate_status` request (docs/migrations.md): the versions applied there."""
        body: JsonObject = {
            "database": database,
            "environment": environment,
            "operation": "migrate_status",
            "detail": "",
        }
        return _text(self._submitted(self._api.create_request(body)))

    def wait_request(
        self, request_id: str, timeout: float = EXECUTE_WAIT_SECS, include_result: bool = True
    ) -> str:
        if not 0 <= timeout <= MAX_WAIT_SECS:
            raise ToolFailure(f"timeout must be between 0 and {MAX_WAIT_SECS:g} seconds")
        return _text(self._follow(request_id, timeout, include_result, through_pending=True))

    def list_pending(self, limit: int = PENDING_LIMIT) -> str:
        """Requests waiting for approval that the caller may see, with who is awaited."""
        return _text(self._api.list_requests({"status": "pending", "limit": str(limit)}).items)

    def who_can_approve(self, request_id: str) -> str:
        request = self._api.get_request(request_id)
        progress = request.get("approval_progress")
        return _text(
            {
                "request_id": request.get("id"),
                "status": request.get("status"),
                "approvers": _approvers(request) if request.get("status") == "pending" else [],
                "approval_progress": progress,
            }
        )

    def explain_policy_failure(
        self,
        request_id: str | None = None,
        sql: str | None = None,
        database: str | None = None,
        environment: str | None = None,
    ) -> str:
        """Why a request (or SQL not yet submitted) is blocked or waits: the request's
        decision trace, and the preflight judgement of its SQL."""
        answer: JsonObject = {}
        if request_id:
            request = self._api.get_request(request_id)
            answer["request"] = {
                key: request.get(key)
                for key in ("id", "status", "operation", "database", "environment", "reason")
            }
            answer["decision_trace"] = request.get("decision_trace")
            if request.get("status") == "pending":
                answer["approvers"] = _approvers(request)
            if request.get("operation", "") not in _SQL_OPERATIONS:
                return _text(answer)
            sql = str(request.get("detail") or "")
            database = str(request.get("database"))
            environment = str(request.get("environment"))
        elif not (sql and database and environment):
            raise ToolFailure("give request_id, or sql with database and environment")
        assert sql is not None and database is not None and environment is not None
        preflight = self._api.preflight(
            {
                "database": database,
                "environment": environment,
                "sql": sql,
                "include_explain": False,
            }
        )
        answer["preflight"] = {
            key: preflight.get(key)
            for key in ("status", "blockers", "fix_hints", "next_actions", "policy", "review")
        }
        answer["risk"] = preflight.get("risk_assessment") or preflight.get("risk")
        return _text(answer)

    def find_similar_requests(self, sql: str, database: str | None = None, limit: int = 10) -> str:
        """Past requests the caller may see with the same redacted fingerprint, then those
        whose text is close; newest first within each."""
        if not 1 <= limit <= MAX_SIMILAR:
            raise ToolFailure(f"limit must be between 1 and {MAX_SIMILAR}")
        wanted = self._fingerprint(sql)
        normalized = _normalize(sql)
        matches: list[tuple[int, float, JsonObject]] = []
        for request in self._visible_requests():
            if database is not None and request.get("database") != database:
                continue
            if request.get("operation", "") not in _SQL_OPERATIONS:
                continue
            detail = str(request.get("detail") or "")
            if wanted is not None and self._fingerprint(detail) == wanted:
                matches.append((0, 1.0, request))
                continue
            ratio = difflib.SequenceMatcher(None, normalized, _normalize(detail)).ratio()
            if ratio >= SIMILAR_TEXT_RATIO:
                matches.append((1, ratio, request))
        matches.sort(key=lambda match: (match[0], -match[1]))
        return _text(
            [
                {
                    "match": "fingerprint" if rank == 0 else "similar_text",
                    "similarity": round(ratio, 2),
                    **{
                        key: request.get(key)
                        for key in (
                            "id",
                            "status",
                            "database",
                            "environment",
                            "requester",
                            "created_at",
                            "detail",
                        )
                    },
                }
                for rank, ratio, request in matches[:limit]
            ]
        )

    def inspect_schema(
        self, database: str, table: str | None = None, environment: str | None = None
    ) -> str:
        return _text(self.schema(database, environment, table=table))

    def preflight(self, sql: str, database: str, environment: str) -> str:
        return _text(
            self._api.preflight({"database": database, "environment": environment, "sql": sql})
        )

    # --- resources -----------------------------------------------------------------------

    def request(self, request_id: str) -> str:
        return _text(self._api.get_request(request_id))

    def recent_audit_events(self, limit: int = AUDIT_LIMIT) -> str:
        return _text(self._api.audit_events({"limit": str(limit)}))

    def schema(
        self, database: str, environment: str | None, *, table: str | None = None
    ) -> JsonObject:
        environment = environment or self._default_environment
        if not environment:
            raise ToolFailure("environment is required")
        return self._api.schema(database, environment, table=table, summary=table is None)

    # --- prompts -------------------------------------------------------------------------

    def explain_request_prompt(self, request_id: str) -> str:
        return (
            "Explain this dbward request to a reviewer in plain words: what the SQL does, "
            "which tables and rows it touches, why the workflow decided what it did (see "
            "decision_trace), and what could go wrong.\n\n" + self.request(request_id)
        )

    def approval_comment_prompt(self, request_id: str) -> str:
        return (
            "Draft a short approval comment for this dbward request: what was checked, the "
            "risk, and any condition for running it. Do not approve it: an approver posts "
            "the comment with `dbward request approve`.\n\n" + self.request(request_id)
        )

    # --- following a request -------------------------------------------------------------

    def _submitted(self, created: JsonObject) -> JsonObject:
        """A create's answer: pending names its approvers (and has no result); anything
        that may run is waited for."""
        request_id = str(created.get("id"))
        if created.get("status") == "pending":
            return _pending(created)
        return self._follow(request_id, EXECUTE_WAIT_SECS, True, through_pending=False)

    def _follow(
        self, request_id: str, timeout: float, include_result: bool, *, through_pending: bool
    ) -> JsonObject:
        """Re-read the request with long-polls until it has a result, ended, waits for
        approval (unless `through_pending`) or the timeout passed; resume a request resting
        in a dispatchable status once, as the CLI's wait does (docs/cli.md)."""
        deadline = self._monotonic() + timeout
        resumed: set[str] = set()
        request = self._api.get_request(request_id)
        while True:
            status = str(request.get("status"))
            if status in FINISHED:
                result = self._api.request_result_stream(request_id) if include_result else None
                if result is not None or not include_result:
                    return _finished(request, result)
            elif status in ENDED:
                return _summary(request)
            elif status == "pending" and not through_pending:
                return _pending(request)
            elif status in DISPATCHABLE and status not in resumed:
                resumed.add(status)
                with contextlib.suppress(ApiError):  # 409: someone else got there first
                    self._api.resume_request(request_id)
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return {**_summary(request), "timed_out": True}
            wait = max(1, min(LONG_POLL_SECS, int(remaining + 0.999)))
            asked = self._monotonic()
            request = self._api.get_request(request_id, wait_secs=wait)
            if request.get("status") == status and self._monotonic() - asked < MIN_PAUSE_SECS:
                self._sleep(MIN_PAUSE_SECS)  # answered at once without news: pace

    def _visible_requests(self) -> list[JsonObject]:
        seen: list[JsonObject] = []
        while len(seen) < SIMILAR_SCAN_LIMIT:
            page = self._api.list_requests({"limit": str(SIMILAR_PAGE), "offset": str(len(seen))})
            seen.extend(page.items)
            if len(page.items) < SIMILAR_PAGE:
                break
        return seen


def _normalize(sql: str) -> str:
    return _SPACE.sub(" ", sql).strip().lower()


def _summary(request: JsonObject) -> JsonObject:
    summary = {
        "request_id": request.get("id"),
        "status": request.get("status"),
        "database": request.get("database"),
        "environment": request.get("environment"),
    }
    if request.get("queue_hint"):
        summary["queue_hint"] = request["queue_hint"]
    return summary


def _pending(request: JsonObject) -> JsonObject:
    request_id = request.get("id")
    approvers = _approvers(request)
    return {
        "request_id": request_id,
        "status": "pending",
        "approvers": approvers,
        "message": (
            f"request {request_id} needs approval from {', '.join(map(str, approvers))}; "
            "nothing ran. Once approved, dbward_wait_request runs it and returns the result."
        ),
    }


def _finished(request: JsonObject, result: JsonObject | None) -> JsonObject:
    answer = _summary(request)
    if result is not None:
        answer.update(
            {
                "success": result.get("success"),
                "rows_affected": result.get("rows_affected"),
                "truncated": result.get("truncated"),
                "error_message": result.get("error_message"),
                "result": _decoded(result.get("result_data")),
            }
        )
    return answer


def _decoded(data: Any) -> Any:
    """The agent's `result_data` may arrive as JSON text; hand the assistant the object."""
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data
