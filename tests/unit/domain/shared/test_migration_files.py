"""Migration files, the v2 detail built from them, and the server's check of that detail."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from domain.shared.migration_files import (
    NEW_FILE_TEMPLATE,
    MigrationDetailError,
    build_detail,
    detail_json,
    dir_sha256,
    new_migration_file_name,
    parse_migration_file,
    parse_migration_files,
    validate_migration_detail,
)

USERS = "-- migrate:up\nCREATE TABLE users (id int);\n\n-- migrate:down\nDROP TABLE users;\n"
INDEX = (
    "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON users (id);\n-- migrate:down\n"
)


def _files() -> list[tuple[str, str]]:
    return [
        ("20260502090000_index.sql", INDEX),
        ("20260501120000_users.sql", USERS),
        ("README.md", "not a migration"),
        ("notes.sql", "-- migrate:up\nSELECT 1;\n"),  # bad name: skipped
        ("20260503000000_empty.sql", "SELECT 1;\n"),  # no up marker: skipped
    ]


def test_a_file_splits_into_its_sections_and_options() -> None:
    users = parse_migration_file("20260501120000_users.sql", USERS)
    assert users is not None
    assert (users.version, users.up_sql, users.down_sql) == (
        "20260501120000",
        "CREATE TABLE users (id int);",
        "DROP TABLE users;",
    )
    index = parse_migration_file("20260502090000_index.sql", INDEX)
    assert index is not None
    assert index.up_transactional is False and index.down_sql is None
    assert parse_migration_file("x_users.sql", USERS) is None
    assert parse_migration_file("1_a.sql", "CREATE TABLE a (id int);") is None


def test_a_directory_is_read_in_version_order_and_skips_what_is_not_a_migration() -> None:
    migrations = parse_migration_files(_files())
    assert [m.version for m in migrations] == ["20260501120000", "20260502090000"]


def test_a_directory_of_sql_files_without_one_migration_is_an_error() -> None:
    with pytest.raises(MigrationDetailError, match="no valid migration among 1"):
        parse_migration_files([("notes.sql", "SELECT 1;")])
    assert parse_migration_files([]) == []


def test_two_files_of_one_version_are_refused() -> None:
    with pytest.raises(MigrationDetailError, match=r"duplicate version 1: 01_b\.sql and 1_a\.sql"):
        parse_migration_files([("1_a.sql", USERS), ("01_b.sql", USERS)])


def test_the_up_detail_carries_every_migration_and_its_manifest_hash() -> None:
    detail = build_detail(parse_migration_files(_files()), "up", max_count=1)
    assert detail["versions"] == ["20260501120000", "20260502090000"]
    assert detail["max_count"] == 1
    assert detail["migrations"] == [
        {
            "version": "20260501120000",
            "sql": "CREATE TABLE users (id int);",
            "transactional": True,
        },
        {
            "version": "20260502090000",
            "sql": "CREATE INDEX CONCURRENTLY i ON users (id);",
            "transactional": False,
        },
    ]
    sql_hash = hashlib.sha256(b"CREATE TABLE users (id int);").hexdigest()
    index_hash = hashlib.sha256(b"CREATE INDEX CONCURRENTLY i ON users (id);").hexdigest()
    manifest = f"20260501120000\x001\x00{sql_hash}\n20260502090000\x000\x00{index_hash}\n"
    assert detail["dir_sha256"] == hashlib.sha256(manifest.encode()).hexdigest()
    assert validate_migration_detail("migrate_up", detail_json(detail)) == (
        "20260501120000",
        "20260502090000",
    )


def test_the_down_detail_carries_only_down_sections_and_reverts_one_by_default() -> None:
    detail = build_detail(parse_migration_files(_files()), "down")
    assert detail["versions"] == ["20260501120000"]
    assert detail["max_count"] == 1
    assert detail["migrations"] == [
        {"version": "20260501120000", "sql": "DROP TABLE users;", "transactional": True}
    ]
    validate_migration_detail("migrate_down", detail_json(detail))
    with pytest.raises(MigrationDetailError, match="no migrations with a down section"):
        build_detail(parse_migration_files([("1_a.sql", INDEX)]), "down")


def test_new_file_names_are_utc_timestamps_bumped_past_a_clash() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, 500, tzinfo=UTC)
    assert new_migration_file_name("add_users", now, []) == "20260501120000_add_users.sql"
    taken = ["20260501120000_a.sql", "20260501120001_b.sql"]
    assert new_migration_file_name("c", now, taken) == "20260501120002_c.sql"
    with pytest.raises(MigrationDetailError, match="invalid migration name"):
        new_migration_file_name("../evil", now, [])
    assert NEW_FILE_TEMPLATE == "-- migrate:up\n\n-- migrate:down\n"


def _valid() -> dict[str, object]:
    return build_detail(parse_migration_files(_files()), "up")


def _tampered() -> dict[str, object]:
    detail = _valid()
    migrations = detail["migrations"]
    assert isinstance(migrations, list)
    migrations[0] = {**migrations[0], "sql": "DROP TABLE users;"}
    return detail


def _with(**changes: object) -> dict[str, object]:
    return {**_valid(), **changes}


@pytest.mark.parametrize(
    ("operation", "detail", "problem"),
    [
        ("migrate_up", _tampered(), "dir_sha256 does not match"),
        ("migrate_up", _with(dir_sha256=None), "dir_sha256 is missing"),
        ("migrate_up", _with(format="v1"), "format must be 'v2'"),
        ("migrate_down", _valid(), "migrate_down needs direction 'down'"),
        ("migrate_up", _with(versions=["20260501120000"]), "versions must list"),
        ("migrate_up", _with(max_count=0), "max_count must be a positive integer"),
        ("migrate_up", _with(max_count=True), "max_count must be a positive integer"),
        ("migrate_up", _with(migrations=[]), "non-empty array"),
        ("migrate_up", _with(extra=1), "unknown detail field"),
        (
            "migrate_up",
            _with(migrations=[{"version": "1'; DROP", "sql": "x"}]),
            "version must be a string of digits",
        ),
        (
            "migrate_up",
            _with(migrations=[{"version": "2", "sql": "x"}, {"version": "1", "sql": "y"}]),
            "version 1 is out of order",
        ),
        (
            "migrate_up",
            _with(migrations=[{"version": "1", "sql": "x"}, {"version": "1", "sql": "y"}]),
            "version 1 is duplicate",
        ),
        ("migrate_up", _with(migrations=[{"version": "1", "sql": " "}]), "sql must be non-empty"),
        ("migrate_repair", {"action": "drop", "version": "1"}, "action must be"),
        ("migrate_repair", {"action": "remove", "version": "x"}, "digits"),
    ],
)
def test_the_server_refuses_a_detail_naming_the_problem(
    operation: str, detail: dict[str, object], problem: str
) -> None:
    with pytest.raises(MigrationDetailError, match=problem):
        validate_migration_detail(operation, json.dumps(detail))


def test_status_takes_an_empty_detail_and_non_json_is_refused() -> None:
    assert validate_migration_detail("migrate_status", "") == ()
    with pytest.raises(MigrationDetailError, match="empty detail"):
        validate_migration_detail("migrate_status", "SELECT 1")
    with pytest.raises(MigrationDetailError, match="not JSON"):
        validate_migration_detail("migrate_up", "{")
    assert validate_migration_detail("migrate_repair", '{"action":"remove","version":"1"}') == (
        "1",
    )


def test_the_manifest_hash_of_no_entries_is_the_empty_hash() -> None:
    assert dir_sha256([]) == hashlib.sha256(b"").hexdigest()
