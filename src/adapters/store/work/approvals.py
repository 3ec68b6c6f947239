"""`ApprovalRepository` over SQLAlchemy Core: the `approvals` table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, bindparam, insert, select

from adapters.store.schema import approvals
from adapters.store.work.base import SqlRepository
from domain.server.approvals import Approval, ApprovalAction
from domain.shared.timestamps import format_timestamp, parse_timestamp


def _approval(row: Row[Any]) -> Approval:
    m = row._mapping
    return Approval(
        id=m["id"],
        request_id=m["request_id"],
        action=ApprovalAction(m["action"]),
        actor_id=m["actor_id"],
        step_index=m["step_index"],
        matched_selector=m["matched_selector"],
        comment=m["comment"],
        created_at=parse_timestamp(m["created_at"]),
    )


#: Built once: every result read checks the reader's approvals.
_REQUEST_APPROVALS = (
    select(approvals)
    .where(approvals.c.request_id == bindparam("_request_id"))
    .order_by(approvals.c.created_at, approvals.c.id)
)


class SqlApprovalRepository(SqlRepository):
    def insert_approval(self, approval: Approval) -> bool:
        # The partial unique index (request, actor, step) WHERE action = 'approve' refuses a
        # second approval; the savepoint keeps the caller's transaction usable.
        return self._insert_or_conflict(
            insert(approvals).values(
                id=approval.id,
                request_id=approval.request_id,
                action=approval.action.value,
                actor_id=approval.actor_id,
                matched_selector=approval.matched_selector,
                step_index=approval.step_index,
                comment=approval.comment,
                created_at=format_timestamp(approval.created_at),
            )
        )

    def approvals_for_request(self, request_id: str) -> list[Approval]:
        return self._all(_REQUEST_APPROVALS, _approval, {"_request_id": request_id})
