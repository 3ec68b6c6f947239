"""API tokens: format, lookup prefix, hashing and the usability check (docs/server.md §4.5).

A token is `dbw_` + 32 lowercase hex characters. The server keeps only the SHA-256 of the
whole token and an 8-character lookup prefix: the prefix narrows the search to a few rows
through an index, and the hash comparison is constant-time, so neither the database nor
response timing reveals a usable token. The plaintext exists once, in the create response.

Randomness and the clock are passed in, so this module stays pure.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.server.errors import Unauthenticated

TOKEN_PREFIX = "dbw_"  # noqa: S105 - the format marker, not a secret
TOKEN_RANDOM_BYTES = 16
MIN_TOKEN_LENGTH = 12
MAX_TOKEN_LENGTH = 256
_LOOKUP_START = len(TOKEN_PREFIX)
_LOOKUP_END = _LOOKUP_START + 8


class SubjectType(StrEnum):
    """Who a token (and so a principal) speaks for."""

    USER = "user"
    AGENT = "agent"


class TokenStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class ProvisioningKind(StrEnum):
    """How a token came to be when the server, not its owner, created it.

    `initial` is the token handed out with a new user (one active per subject);
    `bootstrap` the first-start admin and agent tokens, hidden from listings.
    """

    INITIAL = "initial"
    BOOTSTRAP = "bootstrap"


def new_token(random_bytes: bytes) -> str:
    """A fresh token from 16 random bytes (the caller draws them from `secrets`)."""
    if len(random_bytes) != TOKEN_RANDOM_BYTES:
        raise ValueError(
            f"a token needs exactly {TOKEN_RANDOM_BYTES} random bytes, got {len(random_bytes)}"
        )
    return TOKEN_PREFIX + random_bytes.hex()


def is_well_formed(raw: str) -> bool:
    """Whether `raw` could be one of our tokens: checked before any database lookup.

    The length window (12-256) is dbward 0.2's: wide enough for tokens minted by other
    dbward versions, narrow enough that junk never reaches the store.
    """
    return (
        raw.isascii()
        and MIN_TOKEN_LENGTH <= len(raw) <= MAX_TOKEN_LENGTH
        and raw.startswith(TOKEN_PREFIX)
    )


def lookup_prefix(raw: str) -> str:
    """The indexed lookup key: the 8 characters after `dbw_`."""
    return raw[_LOOKUP_START:_LOOKUP_END]


def token_hash(raw: str) -> str:
    """Hex SHA-256 of the whole token, as stored in `tokens.token_hash`."""
    return hashlib.sha256(raw.encode()).hexdigest()


def hashes_match(a: str, b: str) -> bool:
    """Constant-time comparison, so response time does not leak how much of a hash matched."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class TokenRecord:
    """One row of `tokens`. `scope_ceiling` None means no ceiling was recorded."""

    id: str
    subject_type: SubjectType
    subject_id: str
    token_hash: str
    token_prefix: str
    scope_ceiling: tuple[str, ...] | None
    name: str | None
    status: TokenStatus
    provisioning_kind: ProvisioningKind | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.status is TokenStatus.ACTIVE

    @property
    def is_bootstrap(self) -> bool:
        """Bootstrap tokens are hidden from listings and answer 404 to revoke/inspect."""
        return self.provisioning_kind is ProvisioningKind.BOOTSTRAP

    def is_expired(self, now: datetime) -> bool:
        """Expired from the instant `expires_at` is reached (both times timezone-aware)."""
        return self.expires_at is not None and now >= self.expires_at


def check_usable(record: TokenRecord, now: datetime) -> None:
    """Raise `Unauthenticated` (401) when the token may no longer be used.

    Codes: `token_revoked`, `token_expired`. Revocation is checked first: a revoked token
    is refused for that reason even if it has also expired.
    """
    if record.status is TokenStatus.REVOKED:
        raise Unauthenticated("token revoked", code="token_revoked")
    if record.is_expired(now):
        raise Unauthenticated("token expired", code="token_expired")


def find_matching(raw: str, candidates: Iterable[TokenRecord]) -> TokenRecord | None:
    """The record whose hash matches `raw`, among the rows found by its lookup prefix.

    Every candidate is compared (no early exit), so the time taken does not depend on
    which row matched.
    """
    wanted = token_hash(raw)
    found: TokenRecord | None = None
    for record in candidates:
        if hashes_match(record.token_hash, wanted) and found is None:
            found = record
    return found


def authenticate(raw: str, candidates: Iterable[TokenRecord], now: datetime) -> TokenRecord:
    """Verify a presented bearer token against the rows stored under its lookup prefix.

    Malformed and unknown tokens get the same `unauthorized` answer, so a caller cannot
    tell whether a prefix exists. A matching but revoked or expired token gets its own code.
    """
    if not is_well_formed(raw):
        raise Unauthenticated()
    record = find_matching(raw, candidates)
    if record is None:
        raise Unauthenticated()
    check_usable(record, now)
    return record


def is_agent_ceiling_allowed(ceiling: tuple[str, ...] | None) -> bool:
    """Agent tokens may carry no ceiling or exactly `["agent-default"]` (§4.5 create)."""
    return ceiling is None or ceiling == ("agent-default",)
