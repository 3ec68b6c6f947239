"""API tokens: format, lookup, hashing, usability (docs/server.md §4.5)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from domain.server.api_tokens import (
    ProvisioningKind,
    SubjectType,
    TokenRecord,
    TokenStatus,
    authenticate,
    check_usable,
    find_matching,
    hashes_match,
    is_agent_ceiling_allowed,
    is_well_formed,
    lookup_prefix,
    new_token,
    token_hash,
)
from domain.server.errors import Unauthenticated

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
RAW = new_token(bytes(range(16)))


def record(raw: str = RAW, **overrides: object) -> TokenRecord:
    base = TokenRecord(
        id="tok-1",
        subject_type=SubjectType.USER,
        subject_id="alice",
        token_hash=token_hash(raw),
        token_prefix=lookup_prefix(raw),
        scope_ceiling=("requester",),
        name="laptop",
        status=TokenStatus.ACTIVE,
        provisioning_kind=None,
        expires_at=None,
        created_at=NOW - timedelta(days=1),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_new_token_is_dbw_and_32_lowercase_hex() -> None:
    assert RAW == "dbw_000102030405060708090a0b0c0d0e0f"
    assert re.fullmatch(r"dbw_[0-9a-f]{32}", new_token(b"\xff" * 16))
    assert len(RAW) == 36


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_new_token_needs_sixteen_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="exactly 16 random bytes"):
        new_token(b"\x00" * size)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (RAW, True),
        ("dbw_12345678", True),  # 12 characters: the minimum
        ("dbw_1234567", False),  # 11
        ("dbw_" + "a" * 252, True),  # 256: the maximum
        ("dbw_" + "a" * 253, False),  # 257
        ("xyz_" + "a" * 32, False),
        ("DBW_" + "a" * 32, False),
        ("dbw_" + "é" * 32, False),  # not ASCII
        ("", False),
        ("eyJhbGciOiJSUzI1NiJ9.e30.sig", False),  # a JWT goes the OIDC way
    ],
)
def test_well_formed(raw: str, ok: bool) -> None:
    assert is_well_formed(raw) is ok


def test_lookup_prefix_is_the_eight_chars_after_dbw() -> None:
    assert lookup_prefix(RAW) == "00010203"
    assert lookup_prefix("dbw_abcdefgh_rest") == "abcdefgh"


def test_hash_is_hex_sha256_of_the_whole_token() -> None:
    assert token_hash(RAW) == hashlib.sha256(RAW.encode()).hexdigest()
    assert len(token_hash(RAW)) == 64
    assert token_hash(RAW) != token_hash(RAW + "0")


def test_hashes_match() -> None:
    assert hashes_match(token_hash(RAW), token_hash(RAW))
    assert not hashes_match(token_hash(RAW), token_hash("dbw_" + "f" * 32))
    assert not hashes_match("ab", "abc")


def test_active_unexpired_token_is_usable() -> None:
    check_usable(record(), NOW)
    check_usable(record(expires_at=NOW + timedelta(seconds=1)), NOW)


def test_expired_token() -> None:
    for expires_at in (NOW, NOW - timedelta(seconds=1)):
        with pytest.raises(Unauthenticated) as caught:
            check_usable(record(expires_at=expires_at), NOW)
        assert caught.value.code == "token_expired"
        assert caught.value.status == 401


def test_revoked_token_wins_over_expired() -> None:
    revoked = record(status=TokenStatus.REVOKED, revoked_at=NOW, expires_at=NOW - timedelta(days=1))
    with pytest.raises(Unauthenticated) as caught:
        check_usable(revoked, NOW)
    assert caught.value.code == "token_revoked"


def test_find_matching_picks_the_row_with_the_hash() -> None:
    other = record("dbw_00010203" + "f" * 24, id="tok-other")
    mine = record(id="tok-mine")
    assert find_matching(RAW, [other, mine]) is mine
    assert find_matching(RAW, [other]) is None
    assert find_matching(RAW, []) is None


def test_authenticate() -> None:
    mine = record()
    assert authenticate(RAW, [mine], NOW) is mine


@pytest.mark.parametrize("raw", ["dbw_short", "nope_" + "0" * 32, "dbw_" + "9" * 32])
def test_authenticate_refuses_malformed_and_unknown_alike(raw: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authenticate(raw, [record()], NOW)
    assert caught.value.code == "unauthorized"
    assert caught.value.message == "authentication failed"


def test_authenticate_reports_expiry() -> None:
    with pytest.raises(Unauthenticated) as caught:
        authenticate(RAW, [record(expires_at=NOW - timedelta(minutes=1))], NOW)
    assert caught.value.code == "token_expired"


def test_record_flags() -> None:
    assert record().is_active
    assert not record(status=TokenStatus.REVOKED).is_active
    assert record(provisioning_kind=ProvisioningKind.BOOTSTRAP).is_bootstrap
    assert not record(provisioning_kind=ProvisioningKind.INITIAL).is_bootstrap
    assert [kind.value for kind in ProvisioningKind] == ["initial", "bootstrap"]
    assert [kind.value for kind in SubjectType] == ["user", "agent"]
    assert [kind.value for kind in TokenStatus] == ["active", "revoked"]


def test_agent_ceiling_rule() -> None:
    assert is_agent_ceiling_allowed(None)
    assert is_agent_ceiling_allowed(("agent-default",))
    assert not is_agent_ceiling_allowed(("admin",))
    assert not is_agent_ceiling_allowed(("agent-default", "admin"))
    assert not is_agent_ceiling_allowed(())
