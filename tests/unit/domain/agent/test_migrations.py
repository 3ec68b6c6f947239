"""Migration details, plans, the per-version loop and result shapes (docs/protocol.md §12, §5)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from domain.agent.errors import DatabaseError, MigrationError, PartialMigrationError
from domain.agent.migrations import (
    Direction,
    Migration,
    MigrationDetail,
    RepairAction,
    down_result,
    parse_migration_detail,
    parse_repair_detail,
    partial_result,
    plan_down,
    plan_up,
    repair_result,
    run_plan,
    status_result,
    up_result,
    validate_version,
)


def detail_json(
    direction: str = "up",
    versions: tuple[str, ...] = ("1", "2", "3"),
    max_count: int | None = None,
    **extra: object,
) -> str:
    body: dict[str, object] = {
        "format": "v2",
        "direction": direction,
        "versions": list(versions),
        "migrations": [{"version": v, "sql": f"SELECT {v}"} for v in versions],
        "dir_sha256": "ab" * 32,
    }
    if max_count is not None:
        body["max_count"] = max_count
    body.update(extra)
    return json.dumps(body)


def detail(direction: Direction = Direction.UP, max_count: int | None = None) -> MigrationDetail:
    return parse_migration_detail(detail_json(direction.value, max_count=max_count), direction)


# --- parsing --------------------------------------------------------------------------------


def test_parses_a_v2_detail_with_defaults() -> None:
    raw = json.dumps(
        {
            "format": "v2",
            "direction": "up",
            "versions": ["20260501120000", "20260502120000"],
            "migrations": [
                {"version": "20260501120000", "sql": "CREATE TABLE t (id int)"},
                {
                    "version": "20260502120000",
                    "sql": "CREATE INDEX CONCURRENTLY i ON t (id)",
                    "transactional": False,
                },
            ],
            "dir_sha256": "00" * 32,
            "max_count": 1,
        }
    )
    parsed = parse_migration_detail(raw, Direction.UP)
    assert parsed.direction is Direction.UP
    assert parsed.max_count == 1
    assert parsed.versions == ("20260501120000", "20260502120000")
    assert parsed.migrations == (
        Migration("20260501120000", "CREATE TABLE t (id int)", True),
        Migration("20260502120000", "CREATE INDEX CONCURRENTLY i ON t (id)", False),
    )


def test_max_count_absent_or_null_means_unlimited() -> None:
    assert detail().max_count is None
    assert parse_migration_detail(detail_json(max_count=None), Direction.UP).max_count is None
    raw = json.loads(detail_json())
    raw["max_count"] = None
    assert parse_migration_detail(json.dumps(raw), Direction.UP).max_count is None


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1,2]",
        '{"direction":"up"}',
        '{"direction":"up","migrations":{}}',
        '{"direction":"up","migrations":[1]}',
        '{"direction":"up","migrations":[{"sql":"x"}]}',
        '{"direction":"up","migrations":[{"version":"1","sql":5}]}',
        '{"direction":"up","migrations":[{"version":"1","sql":"x","transactional":"no"}]}',
        '{"direction":"up","migrations":[],"max_count":-1}',
        '{"direction":"up","migrations":[],"max_count":true}',
        '{"direction":"up","migrations":[],"max_count":"2"}',
        '{"direction":"up","migrations":[],"versions":"1"}',
        '{"direction":"up","migrations":[],"format":"v3"}',
        '{"migrations":[]}',
        '{"direction":"up","migrations":[{"version":"1","sql":"a"},{"version":"1","sql":"b"}]}',
    ],
)
def test_malformed_details_are_migration_errors(raw: str) -> None:
    with pytest.raises(MigrationError, match=r"^invalid migration detail JSON: "):
        parse_migration_detail(raw, Direction.UP)


def test_direction_must_match_the_operation() -> None:
    with pytest.raises(MigrationError, match=r"^expected direction 'up', got 'down'$"):
        parse_migration_detail(detail_json("down"), Direction.UP)
    with pytest.raises(MigrationError, match=r"^expected direction 'down', got 'sideways'$"):
        parse_migration_detail(detail_json("sideways"), Direction.DOWN)


@pytest.mark.parametrize(
    "version",
    ["", "   ", "1'; DROP TABLE t; --", "a;b", 'a"b', "a\\b", "a\nb", "a\rb", "a\x00b", "x" * 256],
)
def test_garbage_versions_are_rejected_before_any_sql(version: str) -> None:
    with pytest.raises(MigrationError, match="invalid migration version"):
        validate_version(version)
    raw = json.dumps({"direction": "up", "migrations": [{"version": version, "sql": "SELECT 1"}]})
    with pytest.raises(MigrationError, match="invalid migration version"):
        parse_migration_detail(raw, Direction.UP)


def test_reasonable_versions_pass() -> None:
    for version in ("20260501120000", "1", "v1.2.3-beta_4", "x" * 255):
        assert validate_version(version) == version


def test_non_string_version_is_rejected() -> None:
    raw = json.dumps({"direction": "up", "migrations": [{"version": 1, "sql": "SELECT 1"}]})
    with pytest.raises(MigrationError, match="expected a string"):
        parse_migration_detail(raw, Direction.UP)


def test_repair_detail() -> None:
    repair = parse_repair_detail('{"action":"mark_applied","version":"20260501120000"}')
    assert repair.action is RepairAction.MARK_APPLIED
    assert repair.version == "20260501120000"
    assert parse_repair_detail('{"action":"remove","version":"7"}').action is RepairAction.REMOVE


@pytest.mark.parametrize(
    "raw",
    ["", "{}", '{"action":"delete","version":"1"}', '{"action":"remove"}', '"remove"'],
)
def test_malformed_repair_details(raw: str) -> None:
    with pytest.raises(MigrationError, match=r"^invalid migration detail JSON: "):
        parse_repair_detail(raw)


def test_repair_version_is_validated() -> None:
    with pytest.raises(MigrationError, match="invalid migration version"):
        parse_repair_detail('{"action":"remove","version":"1\'"}')


# --- planning -------------------------------------------------------------------------------


def versions(plan: list[Migration]) -> list[str]:
    return [m.version for m in plan]


def test_plan_up_keeps_detail_order_and_skips_applied() -> None:
    assert versions(plan_up(detail(), set())) == ["1", "2", "3"]
    assert versions(plan_up(detail(), {"2"})) == ["1", "3"]
    assert versions(plan_up(detail(), {"1", "2", "3"})) == []


def test_plan_up_respects_max_count() -> None:
    assert versions(plan_up(detail(max_count=2), {"1"})) == ["2", "3"]
    assert versions(plan_up(detail(max_count=1), set())) == ["1"]
    assert versions(plan_up(detail(max_count=0), set())) == []


def test_plan_up_requires_sql() -> None:
    raw = json.dumps({"direction": "up", "migrations": [{"version": "1"}]})
    with pytest.raises(MigrationError, match="migration 1 has no up SQL"):
        plan_up(parse_migration_detail(raw, Direction.UP), set())


def test_plan_down_is_newest_first_and_applied_only() -> None:
    down = detail(Direction.DOWN)
    assert versions(plan_down(down, {"1", "2", "3"})) == ["3", "2", "1"]
    assert versions(plan_down(down, {"1", "3", "99"})) == ["3", "1"]
    assert versions(plan_down(down, set())) == []


def test_plan_down_respects_max_count() -> None:
    assert versions(plan_down(detail(Direction.DOWN, max_count=1), {"1", "2", "3"})) == ["3"]
    assert versions(plan_down(detail(Direction.DOWN, max_count=2), {"1", "2"})) == ["2", "1"]


@pytest.mark.parametrize("sql", [None, "", "  \n"])
def test_plan_down_names_a_version_without_down_sql(sql: str | None) -> None:
    entry: dict[str, object] = {"version": "2"}
    if sql is not None:
        entry["sql"] = sql
    raw = json.dumps(
        {"direction": "down", "migrations": [{"version": "1", "sql": "DROP TABLE a"}, entry]}
    )
    parsed = parse_migration_detail(raw, Direction.DOWN)
    with pytest.raises(MigrationError, match="migration 2 has no down SQL"):
        plan_down(parsed, {"1", "2"})
    # Not planned (not applied): no error.
    assert versions(plan_down(parsed, {"1"})) == ["1"]


# --- the loop -------------------------------------------------------------------------------


class Recorder:
    """Applies by recording; fails on chosen versions; can fire a cancel after a version."""

    def __init__(
        self,
        fail: dict[str, DatabaseError] | None = None,
        cancel_after: str | None = None,
    ) -> None:
        self.fail = fail or {}
        self.cancel_after = cancel_after
        self.applied: list[str] = []
        self.cancelled = False

    def apply(self, migration: Migration) -> None:
        if migration.version in self.fail:
            raise self.fail[migration.version]
        self.applied.append(migration.version)
        if migration.version == self.cancel_after:
            self.cancelled = True

    def is_cancelled(self) -> Callable[[], bool]:
        return lambda: self.cancelled


def plan_of(*names: str) -> list[Migration]:
    return [Migration(name, f"SELECT {name}") for name in names]


def test_run_plan_applies_everything_in_order() -> None:
    rec = Recorder()
    assert run_plan(Direction.UP, plan_of("1", "2"), rec.apply, rec.is_cancelled()) == ["1", "2"]
    assert rec.applied == ["1", "2"]


def test_first_failure_is_a_plain_migration_error() -> None:
    rec = Recorder(fail={"1": MigrationError("migration 1 failed: boom")})
    with pytest.raises(MigrationError) as info:
        run_plan(Direction.UP, plan_of("1", "2"), rec.apply, rec.is_cancelled())
    assert not isinstance(info.value, PartialMigrationError)
    assert str(info.value) == "migration 1 failed: boom"
    assert rec.applied == []


def test_first_failure_keeps_connectivity() -> None:
    rec = Recorder(fail={"1": DatabaseError("gone", connectivity=True)})
    with pytest.raises(MigrationError) as info:
        run_plan(Direction.UP, plan_of("1"), rec.apply, rec.is_cancelled())
    assert info.value.connectivity


def test_later_failure_is_partial_with_the_reference_shape() -> None:
    rec = Recorder(fail={"2": MigrationError("migration 2 failed: boom", connectivity=True)})
    with pytest.raises(PartialMigrationError) as info:
        run_plan(Direction.UP, plan_of("1", "2", "3"), rec.apply, rec.is_cancelled())
    assert str(info.value) == "migration 2 failed: boom"
    assert json.loads(info.value.result_data) == {
        "applied_before_failure": ["1"],
        "error": "migration 2 failed: boom",
    }
    assert info.value.connectivity
    assert rec.applied == ["1"]


def test_down_partial_uses_reverted_key() -> None:
    rec = Recorder(fail={"1": MigrationError("nope")})
    with pytest.raises(PartialMigrationError) as info:
        run_plan(Direction.DOWN, plan_of("2", "1"), rec.apply, rec.is_cancelled())
    assert json.loads(info.value.result_data) == {
        "reverted_before_failure": ["2"],
        "error": "nope",
    }


def test_unrecorded_version_is_partial_even_first() -> None:
    rec = Recorder(fail={"1": PartialMigrationError("migration 1 was applied but ...", "")})
    with pytest.raises(PartialMigrationError) as info:
        run_plan(Direction.UP, plan_of("1", "2"), rec.apply, rec.is_cancelled())
    assert json.loads(info.value.result_data) == {
        "applied_before_failure": [],
        "error": "migration 1 was applied but ...",
    }


def test_cancel_before_anything() -> None:
    rec = Recorder()
    with pytest.raises(MigrationError, match=r"^cancelled before applying any migration$") as info:
        run_plan(Direction.UP, plan_of("1"), rec.apply, lambda: True)
    assert not isinstance(info.value, PartialMigrationError)
    assert rec.applied == []


def test_cancel_between_versions_is_partial() -> None:
    rec = Recorder(cancel_after="1")
    with pytest.raises(PartialMigrationError) as info:
        run_plan(Direction.UP, plan_of("1", "2", "3"), rec.apply, rec.is_cancelled())
    data = json.loads(info.value.result_data)
    assert data["applied_before_failure"] == ["1"]
    assert data["error"] == str(info.value)
    assert "cancelled" in data["error"]
    assert rec.applied == ["1"]


def test_cancel_after_the_last_version_is_success() -> None:
    rec = Recorder(cancel_after="2")
    assert run_plan(Direction.UP, plan_of("1", "2"), rec.apply, rec.is_cancelled()) == ["1", "2"]


def test_empty_plan_is_success() -> None:
    assert run_plan(Direction.UP, [], Recorder().apply, lambda: True) == []


# --- results --------------------------------------------------------------------------------


def test_result_shapes_are_compact_json() -> None:
    assert up_result(["1", "2"]) == '{"applied":["1","2"]}'
    assert up_result([]) == '{"applied":[]}'
    assert down_result(["3", "2"]) == '{"reverted":["3","2"]}'
    assert status_result(["1"]) == '{"applied_versions":["1"]}'
    assert (
        repair_result(parse_repair_detail('{"action":"remove","version":"7"}'))
        == '{"repaired":"remove","version":"7"}'
    )
    assert (
        partial_result(Direction.UP, ["1"], "boom")
        == '{"applied_before_failure":["1"],"error":"boom"}'
    )
    assert partial_result(Direction.DOWN, [], "é") == '{"reverted_before_failure":[],"error":"é"}'
