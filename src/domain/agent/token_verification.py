"""The agent's checks of an execution token, in order, with their messages
(docs/protocol.md §4.2).

The bytes that are signed come from `domain.shared.execution_token`; the cryptography lives
behind the `SignatureCheck` callable the caller passes in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from domain.agent.errors import TokenVerificationError
from domain.shared.execution_token import detail_hash, signed_message
from domain.shared.jobs import ClaimedJob

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
    """Run every check of docs/protocol.md §4.2, in its order, with its messages.

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

    With a signed plan, its statements in order (dbward 0.2 runs them joined with
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
    """The signed statements as one text, as dbward 0.2 sends them to the database."""
    return ";\n".join(statements_to_execute(claim))
