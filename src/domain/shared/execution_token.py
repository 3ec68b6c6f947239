"""The execution token's bytes, shared by the server that signs and the agent that checks
(docs/protocol.md §4).

The server signs `request_id|operation|environment|database|detail_hash|expires_at|
requester_role|requester_subject_id` with Ed25519. The agent recomputes `detail_hash` from
the claim and rebuilds those bytes (`domain.agent.token_verification`), so the exact bytes
are pinned here, in one pure place, by golden vectors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Operations whose JSON detail is hashed in canonical form.
_CANONICAL_DETAIL_OPERATIONS = frozenset({"migrate_up", "migrate_down", "migrate_repair"})


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII raw: dbward 0.2's `canonicalize_json`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def detail_hash_input(operation: str, detail: str, execution_plan_json: str | None) -> bytes:
    """The bytes whose SHA-256 is `detail_hash` (docs/protocol.md §4.1)."""
    if execution_plan_json is not None:
        return execution_plan_json.encode()
    if operation in _CANONICAL_DETAIL_OPERATIONS:
        try:
            return canonical_json(json.loads(detail)).encode()
        except ValueError:
            return detail.encode()
    return detail.encode()


def detail_hash(operation: str, detail: str, execution_plan_json: str | None) -> str:
    return hashlib.sha256(detail_hash_input(operation, detail, execution_plan_json)).hexdigest()


def signed_message(
    *,
    request_id: str,
    operation: str,
    environment: str,
    database: str,
    detail_hash: str,
    expires_at: str,
    requester_role: str,
    requester_subject_id: str,
) -> bytes:
    """The exact bytes the server signs. Note the order: environment before database."""
    fields = (
        request_id,
        operation,
        environment,
        database,
        detail_hash,
        expires_at,
        requester_role,
        requester_subject_id,
    )
    return "|".join(fields).encode()
