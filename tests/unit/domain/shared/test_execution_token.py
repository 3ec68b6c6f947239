"""Execution tokens: canonical JSON, the detail hash and the signed message bytes."""

from __future__ import annotations

import hashlib

import pytest

from domain.shared.execution_token import (
    canonical_json,
    detail_hash,
    detail_hash_input,
    signed_message,
)


def test_canonical_json_sorts_keys_recursively_and_is_compact() -> None:
    value = {"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": True}}
    assert canonical_json(value) == '{"a":{"c":true,"d":[1,{"y":1,"z":0}]},"b":1}'


def test_canonical_json_keeps_non_ascii_raw_and_does_not_escape_slash() -> None:
    assert canonical_json({"name": "café/ß"}) == '{"name":"café/ß"}'


def test_canonical_json_escapes_control_characters_as_lowercase_u00xx() -> None:
    assert canonical_json("a\x1fb\x0b\n\t") == '"a\\u001fb\\u000b\\n\\t"'


def test_detail_hash_uses_the_raw_execution_plan_json_byte_for_byte() -> None:
    plan_json = '["SELECT 1", "SELECT 2"]'  # not compact: hashed as stored, never re-serialized
    assert detail_hash_input("execute_select", "SELECT 1; SELECT 2", plan_json) == (
        plan_json.encode()
    )
    expected = hashlib.sha256(plan_json.encode()).hexdigest()
    assert detail_hash("execute_select", "ignored", plan_json) == expected


def test_detail_hash_plan_wins_even_for_migrations() -> None:
    assert detail_hash_input("migrate_up", '{"b":1}', '["x"]') == b'["x"]'


@pytest.mark.parametrize("operation", ["migrate_up", "migrate_down", "migrate_repair"])
def test_detail_hash_canonicalizes_migration_json_detail(operation: str) -> None:
    detail = '{ "version": "2", "files": {"up": "CREATE TABLE t ()", "name": "é"} }'
    assert detail_hash_input(operation, detail, None) == (
        '{"files":{"name":"é","up":"CREATE TABLE t ()"},"version":"2"}'.encode()
    )


def test_detail_hash_uses_invalid_migration_json_unchanged() -> None:
    assert detail_hash_input("migrate_up", "{not json", None) == b"{not json"


def test_detail_hash_uses_the_raw_detail_for_sql_without_a_plan() -> None:
    assert detail_hash_input("execute_dml", ' {"a": 1} ', None) == b' {"a": 1} '


def test_detail_hash_of_migrate_status_is_the_hash_of_the_empty_detail() -> None:
    assert detail_hash("migrate_status", "", None) == hashlib.sha256(b"").hexdigest()


def test_signed_message_puts_environment_before_database() -> None:
    message = signed_message(
        request_id="r1",
        operation="execute_dml",
        environment="production",
        database="app",
        detail_hash="abc",
        expires_at="2030-01-01T00:05:00.000000000+00:00",
        requester_role="dev",
        requester_subject_id="alice",
    )
    assert message == (
        b"r1|execute_dml|production|app|abc|2030-01-01T00:05:00.000000000+00:00|dev|alice"
    )
