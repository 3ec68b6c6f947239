"""The web console under `/ui` (docs/console.md): pages over the API's own use cases.

Every page calls the same use case as the matching API route, with the session's principal,
so the console sees and may do exactly what that user's token may through the API. Page
reads are plain functions (FastAPI runs them in its thread pool); preflight is `async` like
its API route. The `…/live` routes answer a page's live region with an ETag, so the page's
script polls cheaply and swaps the region only when something changed.
"""

# No `from __future__ import annotations`: FastAPI must resolve the `Session` dependency
# alias, which lives inside `build_console_router`, when the routes are declared.
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from adapters.http_api.console import views
from adapters.http_api.console.rendering import render, render_fragment
from adapters.http_api.console.security import (
    SESSION_COOKIE,
    ConsoleRoute,
    check_csrf,
    check_login_csrf,
    clear_session_cookie,
    login_csrf,
    set_login_csrf_cookie,
)
from adapters.http_api.routes_approvals import ApprovalUseCases
from adapters.http_api.routes_requests import RequestUseCases
from adapters.http_api.routing import api_router
from application.server.agent_protocol.agents import ListAgents
from application.server.configuration.databases import ListDatabases
from application.server.configuration.schemas import GetSchema
from application.server.console.sessions import ConsoleSession, ConsoleSessions
from application.server.identity.audit_integrity import AuditIntegrity
from application.server.identity.audit_queries import AuditQueries
from application.server.ports.services import ServerClock
from application.server.ports.store import AuditFilters
from application.server.preflight import PreflightInput, RunPreflight
from application.server.requests.create import CreateRequestInput
from application.server.requests.decision_trace import judged_context
from application.server.requests.queries import RequestDetails, RequestList
from application.server.requests.results import ResultEnvelope
from domain.server.errors import Forbidden, NotFound, ServerDomainError, Validation
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus, is_cancellable, is_dispatchable

__all__ = ["ConsoleUseCases", "build_console_router"]

PREFIX = "/ui"
#: Rows on the My requests and Audit pages.
LIST_PAGE = 50
#: Only results of these statuses can be read.
_RESULT_STATUSES = (RequestStatus.EXECUTED, RequestStatus.FAILED, RequestStatus.EXECUTION_LOST)


@dataclass(frozen=True)
class ConsoleUseCases:
    sessions: ConsoleSessions
    requests: RequestUseCases
    approvals: ApprovalUseCases
    run_preflight: RunPreflight
    list_databases: ListDatabases
    list_agents: ListAgents
    audit_queries: AuditQueries
    audit_integrity: AuditIntegrity
    get_schema: GetSchema
    clock: ServerClock


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/inbox"


def _etag(html: str) -> str:
    return '"' + hashlib.sha256(html.encode()).hexdigest()[:32] + '"'


def _with_live_etag(template: str, context: dict[str, Any]) -> dict[str, Any]:
    """The page's context plus the version of its live region as rendered now, so the
    page's first poll already knows what it shows (a change in between is not missed)."""
    return {**context, "live_etag": _etag(render_fragment(template, context))}


def _live(request: Request, html: str) -> Response:
    """A live region, answered 304 when the browser already has this version."""
    etag = _etag(html)
    headers = {"etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


def _try(call: Any) -> Any:
    """A use case's answer, or None when the caller's roles do not allow it (a page then
    leaves that part out, as the API would refuse it)."""
    try:
        return call()
    except Forbidden:
        return None


def build_console_router(use_cases: ConsoleUseCases) -> APIRouter:
    router = api_router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
    sessions = use_cases.sessions
    requests = use_cases.requests

    def signed_in(request: Request) -> ConsoleSession:
        session = sessions.resume(request.cookies.get(SESSION_COOKIE))
        request.state.console_session = session
        return session

    Session = Annotated[ConsoleSession, Depends(signed_in)]  # noqa: N806 - a type alias

    def inbox_list(session: ConsoleSession) -> RequestList:
        return requests.list_requests.list(
            session.principal, limit=100, pending_for_me=True, status="pending"
        )

    def inbox_context(session: ConsoleSession) -> dict[str, Any]:
        listing = inbox_list(session)
        now = use_cases.clock.now()
        return {
            "rows": [
                {
                    "record": record,
                    "age": views.age(record.created_at, now),
                    "risk": (judged_context(record)["risk"] or {}).get("level"),
                    "awaiting": listing.awaiting.get(record.id),
                }
                for record in listing.requests
            ],
            "total": listing.total,
        }

    # --- sign-in and sign-out ---------------------------------------------------------

    @router.get("")
    def root() -> Response:
        return _redirect(f"{PREFIX}/inbox")

    @router.get("/login")
    def login_form(request: Request, next: str | None = None, error: str | None = None) -> Response:
        token, fresh = login_csrf(request)
        response = render(
            request,
            "login.html",
            {"csrf": token, "next": _safe_next(next), "error": error},
            status=401 if error else 200,
        )
        if fresh:
            set_login_csrf_cookie(response, request, token)
        return response

    @router.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form()] = "",
        csrf: Annotated[str | None, Form()] = None,
        next: Annotated[str | None, Form()] = None,
    ) -> Response:
        check_login_csrf(request, csrf)
        try:
            session = sessions.sign_in(token)
        except ServerDomainError as exc:
            if exc.status not in (401, 403):
                raise
            return login_form(request, next, "that token does not sign in: " + exc.message)
        request.state.console_session = session  # ConsoleRoute writes its cookie
        return _redirect(_safe_next(next))

    @router.post("/logout")
    def logout(
        request: Request, session: Session, csrf: Annotated[str | None, Form()] = None
    ) -> Response:
        check_csrf(sessions, session, csrf)
        sessions.sign_out(session)
        request.state.console_session = None
        response = _redirect(f"{PREFIX}/login")
        clear_session_cookie(response, request)
        return response

    # --- inbox --------------------------------------------------------------------------

    @router.get("/inbox")
    def inbox(request: Request, session: Session) -> Response:
        return render(
            request, "inbox.html", _with_live_etag("_inbox_live.html", inbox_context(session))
        )

    @router.get("/inbox/live")
    def inbox_live(request: Request, session: Session) -> Response:
        return _live(request, render_fragment("_inbox_live.html", inbox_context(session)))

    @router.get("/inbox/count")
    def inbox_count(request: Request, session: Session) -> Response:
        return _live(request, str(inbox_list(session).total))

    # --- my requests ----------------------------------------------------------------------

    @router.get("/requests")
    def mine(
        request: Request, session: Session, page: int = 1, status: str | None = None
    ) -> Response:
        page = max(page, 1)
        listing = requests.list_requests.list(
            session.principal,
            limit=LIST_PAGE,
            offset=(page - 1) * LIST_PAGE,
            status=status or None,
            user=session.principal.subject_id,
        )
        now = use_cases.clock.now()
        return render(
            request,
            "mine.html",
            {
                "rows": [(r, views.age(r.created_at, now)) for r in listing.requests],
                "total": listing.total,
                "page": page,
                "pages": max(1, -(-listing.total // LIST_PAGE)),
                "status": status or "",
                "statuses": [s.value for s in RequestStatus],
            },
        )

    # --- new request --------------------------------------------------------------------

    def new_context(session: ConsoleSession, form: dict[str, Any]) -> dict[str, Any]:
        scopes = sorted(
            {
                (view.scope.database, view.scope.environment)
                for view in use_cases.list_databases.list(session.principal)
            }
        )
        return {
            "scopes": scopes,
            "databases": sorted({db for db, _ in scopes}),
            "environments": sorted({env for _, env in scopes}),
            "form": form,
            "report": None,
        }

    @router.get("/requests/new")
    def new_form(
        request: Request, session: Session, database: str = "", environment: str = ""
    ) -> Response:
        context = new_context(
            session, {"database": database, "environment": environment, "sql": "", "reason": ""}
        )
        return render(request, "new.html", context)

    @router.post("/requests/new")
    async def new_submit(
        request: Request,
        session: Session,
        database: Annotated[str, Form()] = "",
        environment: Annotated[str, Form()] = "",
        sql: Annotated[str, Form()] = "",
        reason: Annotated[str, Form()] = "",
        action: Annotated[str, Form()] = "preflight",
        csrf: Annotated[str | None, Form()] = None,
    ) -> Response:
        check_csrf(sessions, session, csrf)
        form = {"database": database, "environment": environment, "sql": sql, "reason": reason}
        client_ip = request.client.host if request.client else None
        if action == "submit":
            created = await run_in_threadpool(
                requests.create_request.create,
                session.principal,
                CreateRequestInput(
                    database=database,
                    environment=environment,
                    detail=sql,
                    reason=reason.strip() or None,
                    client_ip=client_ip,
                ),
            )
            return _redirect(f"{PREFIX}/requests/{created.id}")
        if action != "preflight":
            raise Validation("action must be preflight or submit")
        report = await use_cases.run_preflight.run(
            session.principal,
            PreflightInput(
                database=database, environment=environment, sql=sql, client_ip=client_ip
            ),
        )
        context = await run_in_threadpool(new_context, session, form)
        context["report"] = _preflight_view(report.to_json())
        return render(request, "new.html", context)

    # --- one request ----------------------------------------------------------------------

    def request_context(session: ConsoleSession, request_id: str) -> dict[str, Any]:
        details = requests.get_request.get(session.principal, request_id)
        executions = requests.list_executions.list(session.principal, request_id, 20)
        audit = _try(
            lambda: use_cases.audit_queries.list(
                session.principal, AuditFilters(request_id=request_id), limit=200
            )
        )
        return _request_view(details, executions, audit, use_cases.clock.now())

    @router.get("/requests/{request_id}")
    def request_page(request: Request, request_id: str, session: Session) -> Response:
        context = {"session": session, **request_context(session, request_id)}
        return render(request, "request.html", _with_live_etag("_request_live.html", context))

    @router.get("/requests/{request_id}/live")
    def request_live(request: Request, request_id: str, session: Session) -> Response:
        context = {"session": session, **request_context(session, request_id)}
        return _live(request, render_fragment("_request_live.html", context))

    # Approve, reject, resume, cancel: one text field (an approver's `comment`, the
    # requester's `reason`) and the CSRF token, then back to the request's page.
    def on_request(
        act: Callable[[Principal, str, str | None], object], field: str
    ) -> Callable[..., Response]:
        def handler(
            request_id: str,
            session: Session,
            text: Annotated[str, Form(alias=field)] = "",
            csrf: Annotated[str | None, Form()] = None,
        ) -> Response:
            check_csrf(sessions, session, csrf)
            act(session.principal, request_id, text.strip() or None)
            return _redirect(f"{PREFIX}/requests/{request_id}")

        return handler

    def approve(principal: Principal, request_id: str, comment: str | None) -> object:
        approvals = use_cases.approvals.approve_request
        return approvals.approve(principal, request_id, comment=comment, selector=None)

    for action, field, act in (
        ("approve", "comment", approve),
        ("reject", "comment", use_cases.approvals.reject_request.reject),
        ("resume", "reason", requests.resume_request.resume),
        ("cancel", "reason", requests.cancel_request.cancel),
    ):
        router.add_api_route(
            f"/requests/{{request_id}}/{action}", on_request(act, field), methods=["POST"]
        )

    # --- result ---------------------------------------------------------------------------

    def envelope(session: ConsoleSession, request_id: str) -> ResultEnvelope:
        return requests.get_result_content.get(session.principal, request_id)

    @router.get("/requests/{request_id}/result")
    def result(request: Request, request_id: str, session: Session, page: int = 1) -> Response:
        found = envelope(session, request_id)
        return render(
            request,
            "result.html",
            {
                "request_id": request_id,
                "envelope": found,
                "table": views.result_page(found.result_data, page),
                "text": None
                if isinstance(found.result_data, dict | type(None))
                else str(found.result_data),
            },
        )

    @router.get("/requests/{request_id}/result.csv")
    def result_csv(request_id: str, session: Session) -> Response:
        found = envelope(session, request_id)
        return Response(
            views.result_csv(found.result_data),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{request_id}.csv"'},
        )

    @router.get("/requests/{request_id}/result.json")
    def result_json(request_id: str, session: Session) -> Response:
        found = envelope(session, request_id)
        body = {
            "request_id": request_id,
            "execution_id": found.execution_id,
            "success": found.success,
            "rows_affected": found.rows_affected,
            "truncated": found.truncated,
            "error_message": found.error_message,
            "result_data": found.result_data,
        }
        return Response(
            json.dumps(body, ensure_ascii=False),
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="{request_id}.json"'},
        )

    # --- audit ------------------------------------------------------------------------------

    @router.get("/audit")
    def audit(
        request: Request,
        session: Session,
        request_id: str = "",
        actor_id: str = "",
        event_type: str = "",
        outcome: str = "",
        database: str = "",
        environment: str = "",
        page: int = 1,
    ) -> Response:
        page = max(page, 1)
        filters = {
            "request_id": request_id,
            "actor_id": actor_id,
            "event_type": event_type,
            "outcome": outcome,
            "database": database,
            "environment": environment,
        }
        events = use_cases.audit_queries.list(
            session.principal,
            AuditFilters(
                request_id=request_id or None,
                actor_id=actor_id or None,
                event_type=event_type or None,
                outcome=outcome or None,
                database=database or None,
                environment=environment or None,
            ),
            limit=LIST_PAGE + 1,
            offset=(page - 1) * LIST_PAGE,
        )
        verdict = use_cases.audit_integrity.verify(session.principal)
        query = {key: value for key, value in filters.items() if value}
        return render(
            request,
            "audit.html",
            {
                "events": events[:LIST_PAGE],
                "filters": filters,
                "verdict": verdict,
                "page": page,
                "more": len(events) > LIST_PAGE,
                "query": urlencode(query),
            },
        )

    # --- agents and databases -----------------------------------------------------------

    def schema_sync(session: ConsoleSession, database: str, environment: str) -> Any:
        try:
            return use_cases.get_schema.get(session.principal, database, environment, summary=True)
        except (NotFound, Forbidden):
            return None

    @router.get("/agents")
    def agents(request: Request, session: Session) -> Response:
        databases = use_cases.list_databases.list(session.principal)
        return render(
            request,
            "agents.html",
            {
                "agents": _try(lambda: use_cases.list_agents.list(session.principal)),
                "databases": [
                    (view, schema_sync(session, view.scope.database, view.scope.environment))
                    for view in databases
                ],
            },
        )

    return router


def _preflight_view(report: dict[str, Any]) -> dict[str, Any]:
    explain = report.get("explain") or {}
    plans = [
        {
            "statement": plan.get("statement"),
            "trees": views.plan_trees(plan.get("plan")),
            "json": views.plan_json(plan.get("plan")),
        }
        for plan in explain.get("plans") or []
        if isinstance(plan, dict)
    ]
    return {**report, "plans": plans}


def _request_view(
    details: RequestDetails,
    executions: Any,
    audit: Any,
    now: datetime,
) -> dict[str, Any]:
    record = details.record
    context = judged_context(record)
    trace = None if record.decision_trace_json is None else json.loads(record.decision_trace_json)
    plans = []
    for job in details.dry_runs:
        plan = None if job.result_json is None else json.loads(job.result_json)
        plans.append(
            {
                "job": job,
                "trees": None if plan is None else views.plan_trees(plan),
                "json": None if plan is None else views.plan_json(plan),
            }
        )
    return {
        "record": record,
        "details": details,
        "sql_tokens": views.highlight_sql(record.detail),
        "age": views.age(record.created_at, now),
        "context": context,
        "classification": (trace or {}).get("classification"),
        "trace": trace,
        "plans": plans,
        "progress": details.approval_progress,
        "executions": executions,
        "audit": audit,
        "can_decide": record.status is RequestStatus.PENDING,
        "can_resume": is_dispatchable(record.status),
        "can_cancel": is_cancellable(record.status),
        "has_result": record.status in _RESULT_STATUSES,
    }
