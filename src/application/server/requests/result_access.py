"""Who may read a request's result: the one home of that rule (docs/server.md §1.8).

`result.view` scoped to the request's database and environment, and then one of: the
requester; a `share_with` selector of the request; a selector of the result policy's
`access`; anyone who approved the request; or `result.view:any`. Everyone else is
refused exactly as for a request they may not see (403 `forbidden`, the reason only
logged), so a refusal tells nothing about the result.

`readable_result` checks one request; `result_query` turns the same rule into the sets
the store selects `GET /api/results` by, so the list and the result routes never
disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.server.ports.work.executions import ResultQuery
from application.server.ports.work.requests import RequestRecord
from application.server.settings import ServerSettings
from domain.server.approvals import ApprovalAction
from domain.server.errors import Forbidden, NotFound
from domain.server.rbac import (
    Ownership,
    Permission,
    Principal,
    Result,
    Selector,
    SelectorKind,
    authorize,
    authorize_scoped,
    matched_selectors,
    parse_selector,
)

if TYPE_CHECKING:
    from application.server.ports.store import StoreSession

__all__ = ["readable_result", "result_query"]


def readable_result(
    session: StoreSession, settings: ServerSettings, principal: Principal, request_id: str
) -> RequestRecord:
    """The request, if `principal` may read its result: else NotFound or Forbidden."""
    record = session.work.get_request(request_id)
    if record is None:
        raise NotFound("request not found")
    policy = settings.result_policy_for(record.database, record.environment)
    selectors: list[Selector] = [parse_selector(text) for text in record.share_with]
    selectors.extend(policy.access)
    selectors.extend(
        Selector(SelectorKind.USER, approval.actor_id)
        for approval in session.work.approvals_for_request(record.id)
        if approval.action is ApprovalAction.APPROVE  # a rejection opens nothing
    )
    authorize(
        principal,
        Permission.RESULT_VIEW,
        Result(requester=record.requester, access_selectors=tuple(selectors)),
        database=record.database,
        environment=record.environment,
    )
    return record


def result_query(
    settings: ServerSettings,
    principal: Principal,
    *,
    database: str | None = None,
    environment: str | None = None,
) -> ResultQuery:
    """The results `principal` may read, as `ResultQuery` sets (registered scopes only).

    Per registered scope: `result.view` at all (else nothing there), and whether every
    result there is readable (`result.view:any`, or a matching result-policy `access`
    selector). Elsewhere the store matches the requester, the approvers and the
    `share_with` selectors that name the caller (`user:`, its roles and its groups).
    """
    scopes = set()
    every_result_in = set()
    for scope in settings.registered_scopes:
        try:
            ownership = authorize_scoped(
                principal, Permission.RESULT_VIEW, scope.database, scope.environment
            )
        except Forbidden:
            continue
        scopes.add(scope)
        policy = settings.result_policy_for(scope.database, scope.environment)
        # A policy's `requester` selector names each request's requester: the store's
        # requester match covers it, so it grants no whole scope.
        whole_scope = [s for s in policy.access if s.kind is not SelectorKind.REQUESTER]
        if ownership is Ownership.ANY or matched_selectors(principal, whole_scope):
            every_result_in.add(scope)
    share_selectors = (
        f"{SelectorKind.USER}:{principal.subject_id}",
        *sorted(f"{SelectorKind.ROLE}:{name}" for name in principal.role_names),
        *sorted(f"{SelectorKind.GROUP}:{name}" for name in principal.groups),
    )
    return ResultQuery(
        subject=principal.subject_id,
        scopes=frozenset(scopes),
        every_result_in=frozenset(every_result_in),
        share_selectors=share_selectors,
        database=database,
        environment=environment,
    )
