"""Execution-token rules that need no cryptography (agent-protocol.md §4).

The server signs `request_id|operation|environment|database|detail_hash|expires_at|
requester_role|requester_subject_id` with Ed25519. The agent recomputes `detail_hash` from
the claim, rebuilds those bytes and checks the signature through the callable it is given,
so the exact bytes are pinned here, in one pure place, by golden vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.agent.errors import TokenVerificationError
from domain.shared.jobs import ClaimedJob

#: Operations whose JSON detail is hashed in canonical form.
_CANONICAL_DETAIL_OPERATIONS = frozenset({"migrate_up", "migrate_down", "migrate_repair"})

_REQUIRED_FIELDS = (
    "request_id",
    "operation",
    "environment",
    "database",
    "detail_hash",
    "expires_at",
    "signature",
)

#: `(signature, message) -> valid`: the crypto lives behind this callable.
SignatureCheck = Callable[[bytes, bytes], bool]


@dataclass(frozen=True)
class ExecutionToken:
    request_id: str
    operation: str
    environment: str
    database: str
    detail_hash: str
    expires_at: str
    signature: str
    requester_role: str = ""
    requester_subject_id: str = ""
    issued_at: str | None = None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII raw: the reference's `canonicalize_json`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def detail_hash_input(operation: str, detail: str, execution_plan_json: str | None) -> bytes:
    """The bytes whose SHA-256 is `detail_hash` (agent-protocol.md §4.1)."""
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


def parse_execution_token(raw: str) -> ExecutionToken:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TokenVerificationError(f"invalid token JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TokenVerificationError("invalid token JSON: not an object")
    for name in _REQUIRED_FIELDS:
        if not isinstance(data.get(name), str):
            raise TokenVerificationError(f"invalid token JSON: missing field `{name}`")
    optional = {}
    for name in ("requester_role", "requester_subject_id"):
        value = data.get(name, "")
        if not isinstance(value, str):
            raise TokenVerificationError(f"invalid token JSON: `{name}` is not a string")
        optional[name] = value
    issued_at = data.get("issued_at")
    return ExecutionToken(
        **{name: data[name] for name in _REQUIRED_FIELDS},
        **optional,
        issued_at=issued_at if isinstance(issued_at, str) else None,
    )


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (nanosecond fractions are truncated)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return parsed


def verify_execution_token(
    claim: ClaimedJob, *, now: datetime, check_signature: SignatureCheck
) -> ExecutionToken:
    """Run every check of agent-protocol.md §4.2, in its order, with its messages.

    Raises TokenVerificationError; the caller reports the job as failed (never exits).
    """
    token = parse_execution_token(claim.execution_token)
    try:
        expires_at = parse_rfc3339(token.expires_at)
    except ValueError as exc:
        raise TokenVerificationError(f"invalid expires_at: {exc}") from None
    if now > expires_at:
        raise TokenVerificationError("token expired")
    for name in ("request_id", "operation", "database", "environment"):
        if getattr(token, name) != getattr(claim, name):
            raise TokenVerificationError(f"{name} mismatch")
    expected_hash = detail_hash(claim.operation, claim.detail, claim.execution_plan_json)
    if token.detail_hash != expected_hash:
        raise TokenVerificationError("detail_hash mismatch")
    message = signed_message(
        request_id=claim.request_id,
        operation=claim.operation,
        environment=claim.environment,
        database=claim.database,
        detail_hash=token.detail_hash,
        expires_at=token.expires_at,
        requester_role=token.requester_role,
        requester_subject_id=token.requester_subject_id,
    )
    try:
        signature = bytes.fromhex(token.signature)
    except ValueError:
        raise TokenVerificationError("invalid signature hex") from None
    if len(signature) != 64:
        raise TokenVerificationError("invalid signature")
    if not check_signature(signature, message):
        raise TokenVerificationError("signature invalid: verification equation was not satisfied")
    return token


def statements_to_execute(claim: ClaimedJob) -> tuple[str, ...]:
    """The statements to run, derived only from signed data (never `execution_plan`).

    With a signed plan, its statements in order (the reference runs them joined with
    `";\n"`); without one, the raw detail as a single text, which may itself hold
    several statements.
    """
    if claim.execution_plan_json is None:
        return (claim.detail,)
    try:
        statements = json.loads(claim.execution_plan_json)
    except ValueError as exc:
        raise TokenVerificationError(f"malformed execution_plan_json: {exc}") from None
    if not isinstance(statements, list) or not all(isinstance(s, str) for s in statements):
        raise TokenVerificationError("malformed execution_plan_json: not a list of strings")
    return tuple(statements)


def sql_to_execute(claim: ClaimedJob) -> str:
    """The signed statements as one text, as the reference sends them to the database."""
    return ";\n".join(statements_to_execute(claim))
