"""`ApprovalRepository` over SQLAlchemy Core: the `approvals` table."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from adapters.store.schema import approvals
from adapters.store.work.base import SqlRepository
from application.server.ports.work.approvals import ApprovalAction, ApprovalRecord
from domain.shared.timestamps import format_timestamp


class SqlApprovalRepository(SqlRepository):
    def insert_approval(self, record: ApprovalRecord) -> None:
        self._conn.execute(
            insert(approvals).values(
                id=record.id,
                request_id=record.request_id,
                action=record.action.value,
                actor_id=record.actor_id,
                matched_selector=record.matched_selector,
                step_index=record.step_index,
                comment=record.comment,
                created_at=format_timestamp(record.created_at),
            )
        )

    def approvers_of(self, request_id: str) -> list[str]:
        first = func.min(approvals.c.created_at)
        rows = self._conn.execute(
            select(approvals.c.actor_id)
            .where(
                approvals.c.request_id == request_id,
                approvals.c.action == ApprovalAction.APPROVE.value,
            )
            .group_by(approvals.c.actor_id)
            .order_by(first, approvals.c.actor_id)
        )
        return [row[0] for row in rows]
