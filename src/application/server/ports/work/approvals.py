"""The approvals port: who approved (or rejected) a request, one row per decision.

An approval records the step it approved, the workflow selector the approver matched and
their comment (docs/server.md §2.4). Result access reads it too: whoever approved a
request may read its result (§1.8).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

__all__ = ["ApprovalAction", "ApprovalRecord", "ApprovalRepository"]


class ApprovalAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True)
class ApprovalRecord:
    """One row of `approvals`."""

    id: str
    request_id: str
    action: ApprovalAction
    actor_id: str
    step_index: int
    created_at: datetime
    #: The workflow selector the actor matched (`role:dba`), as the approval used it.
    matched_selector: str | None = None
    comment: str | None = None


class ApprovalRepository(Protocol):
    def insert_approval(self, record: ApprovalRecord) -> None:
        """The request must exist; an approver approves a step at most once (unique index)."""
        ...

    def approvers_of(self, request_id: str) -> list[str]:
        """The subjects that approved any step of the request (not those who rejected it),
        each once, in the order of their first approval."""
        ...
