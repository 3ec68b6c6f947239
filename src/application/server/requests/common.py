"""What the request use cases share with each other and with the agent protocol.

Ids for new rows, the refusal a draining server answers with, the pace of held
long-polls, the limit on a reason, and who approves a request's first step.
"""

from __future__ import annotations

import uuid

from domain.server.errors import ServiceUnavailable
from domain.server.rbac import Selector
from domain.server.workflows import Workflow

__all__ = [
    "LONG_POLL_RECHECK_SECS",
    "MAX_REASON_BYTES",
    "ServerDraining",
    "first_step_approvers",
    "first_step_selectors",
    "new_uuid",
]

#: A reason (on create, on cancel) is limited to this many UTF-8 bytes.
MAX_REASON_BYTES = 1024
#: Held long-polls re-read the store at least this often (another replica's change).
LONG_POLL_RECHECK_SECS = 1.0


def new_uuid() -> str:
    """A UUID v4 string: request, execution, token and claim ids (docs/protocol.md §14)."""
    return str(uuid.uuid4())


class ServerDraining(ServiceUnavailable):
    """The server is shutting down: new work is refused with `{"error":"server_shutting_down"}`."""

    def __init__(self) -> None:
        super().__init__("server_shutting_down")


def first_step_selectors(workflow: Workflow | None) -> tuple[Selector, ...]:
    """Who approves the first step of `workflow`: they may see the request while it is
    pending. No workflow, or one without steps, names nobody."""
    if workflow is None or not workflow.steps:
        return ()
    return workflow.steps[0].selectors


def first_step_approvers(workflow: Workflow | None) -> tuple[str, ...]:
    """`first_step_selectors` as text: the `approvers` a pending request shows and stores."""
    return tuple(str(selector) for selector in first_step_selectors(workflow))
