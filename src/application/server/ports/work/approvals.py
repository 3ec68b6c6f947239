"""The approvals port: the approve and reject rows of a request (docs/server.md §2.4).

An approval row is never changed after it is written. One approver approves one step at
most once: the store's unique index on (request, actor, step) for `approve` rows decides
a race between two identical approvals, and `insert_approval` reports who lost.
"""

from __future__ import annotations

from typing import Protocol

from domain.server.approvals import Approval

__all__ = ["ApprovalRepository"]


class ApprovalRepository(Protocol):
    def insert_approval(self, approval: Approval) -> bool:
        """False when this actor already approved this step of this request."""
        ...

    def approvals_for_request(self, request_id: str) -> list[Approval]:
        """Every row of the request, oldest first."""
        ...
