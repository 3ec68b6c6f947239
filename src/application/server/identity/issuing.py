"""Issuing a token, the one way for every use case that creates one.

`POST /api/tokens`, a new user's initial token (and its reissue) and the bootstrap tokens
all come from `issue_token`, so every token has the same format and only its hash is
stored. Subject ids are checked here too: a user id is the subject id of its tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from domain.server import api_tokens
from domain.server.api_tokens import (
    ProvisioningKind,
    SubjectType,
    TokenRecord,
    TokenStatus,
    lookup_prefix,
    new_token,
    token_hash,
)
from domain.server.errors import Validation

__all__ = ["check_subject_id", "issue_token"]

_SUBJECT_ID = re.compile(r"[A-Za-z0-9@._-]{1,128}")


def check_subject_id(subject_id: str, what: str = "subject_id") -> None:
    """Raise Validation unless `subject_id` is 1-128 of `A-Z a-z 0-9 @ . _ -`."""
    if not _SUBJECT_ID.fullmatch(subject_id):
        raise Validation(
            f"invalid {what} {subject_id!r}: 1-128 characters from A-Z a-z 0-9 @ . _ -"
        )


def issue_token(
    *,
    random_bytes: Callable[[int], bytes],
    new_id: Callable[[], str],
    subject_type: SubjectType,
    subject_id: str,
    ceiling: tuple[str, ...] | None,
    name: str | None,
    kind: ProvisioningKind | None,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[str, TokenRecord]:
    """A fresh token: the plaintext (returned once) and the row that stores only its hash."""
    raw = new_token(random_bytes(api_tokens.TOKEN_RANDOM_BYTES))
    record = TokenRecord(
        id=new_id(),
        subject_type=subject_type,
        subject_id=subject_id,
        token_hash=token_hash(raw),
        token_prefix=lookup_prefix(raw),
        scope_ceiling=ceiling,
        name=name,
        status=TokenStatus.ACTIVE,
        provisioning_kind=kind,
        expires_at=expires_at,
        created_at=now,
    )
    return raw, record
