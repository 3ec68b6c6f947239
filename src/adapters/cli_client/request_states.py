"""What a client waiting on a request makes of its status (docs/server.md §1.4).

The CLI's wait loop and the MCP tools (docs/mcp.md) follow requests the same way, so the
three groups of statuses they act on live here once.
"""

from __future__ import annotations

#: A result exists: `…/result/stream` answers at once.
FINISHED = frozenset({"executed", "failed"})
#: Over without a result; waiting longer changes nothing.
ENDED = frozenset({"rejected", "cancelled", "expired", "execution_lost"})
#: Statuses a dispatch can fall back to (dispatch timeout, or approved and not yet run); a
#: waiting requester resumes them once each.
DISPATCHABLE = frozenset({"auto_approved", "break_glass", "approved"})
