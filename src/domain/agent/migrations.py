"""dbmate-compatible migrations as the agent sees them: signed job details, plans, results.

The CLI builds the job detail from local migration files (docs/protocol.md §12.1), so the
agent needs no filesystem: the detail carries every version with the SQL for the requested
direction. This module turns that signed JSON into plain values, decides which versions to
run against the versions already recorded in `schema_migrations`, drives the per-version
loop (cancel between versions, partial results) and builds the result JSON of §5. It does
no I/O: the engine adapters (`adapters.postgres.migrations`, `adapters.mysql.migrations`) supply
the applied versions and a callback that applies one version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.agent.errors import DatabaseError, MigrationError, PartialMigrationError

#: The only detail format this agent understands. An absent `format` is read as v2 too.
DETAIL_FORMAT = "v2"

#: Upper bound on a version string. dbmate versions are timestamps (14 digits); the cap
#: only keeps garbage out of the tracking table and the logs.
MAX_VERSION_LENGTH = 255

#: Characters a version may never contain. Versions are always bound as parameters, but the
#: reference agent interpolated them, and a version like `1'; DROP …` can only be an attack
#: or a bug: rejecting it before any SQL runs keeps both agents' behaviour the same.
_FORBIDDEN_VERSION_CHARS = frozenset("'\";\\\n\r\x00`")


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"

    @property
    def done_key(self) -> str:
        """Key of the success result: `{"applied": …}` or `{"reverted": …}`."""
        return self.participle

    @property
    def partial_key(self) -> str:
        """Key of the partial result, chosen by direction as dbward 0.2 does."""
        return f"{self.done_key}_before_failure"

    @property
    def verb(self) -> str:
        return "apply" if self is Direction.UP else "revert"

    @property
    def gerund(self) -> str:
        return "applying" if self is Direction.UP else "reverting"

    @property
    def participle(self) -> str:
        return "applied" if self is Direction.UP else "reverted"


class RepairAction(StrEnum):
    MARK_APPLIED = "mark_applied"
    REMOVE = "remove"


@dataclass(frozen=True)
class Migration:
    """One version of the detail. `sql` is the SQL of the detail's direction.

    `sql` is None when the entry carries no SQL at all; for a down run that is an error
    (reverting would only delete the version row and lie about the schema).
    """

    version: str
    sql: str | None
    transactional: bool = True

    @property
    def has_sql(self) -> bool:
        return self.sql is not None and self.sql.strip() != ""


@dataclass(frozen=True)
class MigrationDetail:
    """The v2 detail of a migrate_up / migrate_down job (docs/protocol.md §12.1)."""

    direction: Direction
    migrations: tuple[Migration, ...]
    max_count: int | None = None
    versions: tuple[str, ...] = ()
    dir_sha256: str | None = None
    format: str = DETAIL_FORMAT


@dataclass(frozen=True)
class RepairDetail:
    """The detail of a migrate_repair job: fix one row of `schema_migrations` by hand."""

    action: RepairAction
    version: str


# --- parsing ------------------------------------------------------------------------------


def _invalid(reason: str) -> MigrationError:
    return MigrationError(f"invalid migration detail JSON: {reason}")


def _load_object(detail: str) -> dict[str, Any]:
    try:
        data = json.loads(detail)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(data, dict):
        raise _invalid(f"expected a JSON object, got {type(data).__name__}")
    return data


def _short(value: str, limit: int = 80) -> str:
    """A printable excerpt of untrusted text for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_version(version: object) -> str:
    """Check a version string before it goes anywhere near the database.

    Returns the version unchanged; raises MigrationError naming the problem.
    """
    if not isinstance(version, str):
        raise MigrationError(f"invalid migration version: expected a string, got {version!r}")
    if version == "" or version.strip() == "":
        raise MigrationError("invalid migration version: empty")
    if len(version) > MAX_VERSION_LENGTH:
        raise MigrationError(
            f"invalid migration version {_short(version)}: longer than "
            f"{MAX_VERSION_LENGTH} characters"
        )
    bad = sorted(
        {c for c in version if c in _FORBIDDEN_VERSION_CHARS or ord(c) < 0x20 or c == "\x7f"}
    )
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise MigrationError(
            f"invalid migration version {_short(version)}: contains forbidden characters {shown}"
        )
    return version


def _parse_migration(index: int, entry: object) -> Migration:
    if not isinstance(entry, dict):
        raise _invalid(f"migrations[{index}] is not an object")
    if "version" not in entry:
        raise _invalid(f"migrations[{index}] has no version")
    version = validate_version(entry["version"])
    sql = entry.get("sql")
    if sql is not None and not isinstance(sql, str):
        raise _invalid(f"migrations[{index}].sql must be a string")
    transactional = entry.get("transactional", True)
    if transactional is None:
        transactional = True
    if not isinstance(transactional, bool):
        raise _invalid(f"migrations[{index}].transactional must be a boolean")
    return Migration(version=version, sql=sql, transactional=transactional)


def _parse_max_count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"max_count must be a non-negative integer, got {value!r}")
    return value


def parse_migration_detail(detail: str, expected: Direction) -> MigrationDetail:
    """Parse the signed v2 detail of a migrate_up/migrate_down job.

    `expected` is the direction the operation implies; a detail built for the other
    direction carries the other direction's SQL, so running it would be wrong.
    """
    data = _load_object(detail)
    fmt = data.get("format", DETAIL_FORMAT)
    if fmt is None:
        fmt = DETAIL_FORMAT
    if fmt != DETAIL_FORMAT:
        # A newer CLI may change the meaning of fields; refusing beats guessing.
        raise _invalid(f"unsupported format {fmt!r} (this agent reads {DETAIL_FORMAT!r})")
    direction = data.get("direction")
    if not isinstance(direction, str):
        raise _invalid("direction must be 'up' or 'down'")
    if direction != expected.value:
        raise MigrationError(f"expected direction '{expected.value}', got '{direction}'")
    raw = data.get("migrations")
    if not isinstance(raw, list):
        raise _invalid("migrations must be an array")
    migrations = tuple(_parse_migration(i, entry) for i, entry in enumerate(raw))
    seen: set[str] = set()
    for migration in migrations:
        if migration.version in seen:
            raise _invalid(f"duplicate version {migration.version}")
        seen.add(migration.version)
    versions = data.get("versions", [])
    if versions is None:
        versions = []
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise _invalid("versions must be an array of strings")
    dir_sha256 = data.get("dir_sha256")
    if dir_sha256 is not None and not isinstance(dir_sha256, str):
        raise _invalid("dir_sha256 must be a string")
    return MigrationDetail(
        direction=Direction(direction),
        migrations=migrations,
        max_count=_parse_max_count(data.get("max_count")),
        versions=tuple(versions),
        dir_sha256=dir_sha256,
        format=fmt,
    )


def parse_repair_detail(detail: str) -> RepairDetail:
    """Parse `{"action":"mark_applied"|"remove","version":"…"}`."""
    data = _load_object(detail)
    action = data.get("action")
    if action not in (RepairAction.MARK_APPLIED.value, RepairAction.REMOVE.value):
        raise _invalid(f"action must be 'mark_applied' or 'remove', got {action!r}")
    if "version" not in data:
        raise _invalid("repair detail has no version")
    return RepairDetail(action=RepairAction(action), version=validate_version(data["version"]))


# --- planning -----------------------------------------------------------------------------


def _limited(entries: Iterable[Migration], max_count: int | None) -> list[Migration]:
    planned = list(entries)
    return planned if max_count is None else planned[:max_count]


def plan_up(detail: MigrationDetail, applied: set[str]) -> list[Migration]:
    """Entries not applied yet, in detail order (ascending from the CLI), up to max_count."""
    plan = _limited((m for m in detail.migrations if m.version not in applied), detail.max_count)
    for migration in plan:
        if migration.sql is None:
            raise MigrationError(f"migration {migration.version} has no up SQL")
    return plan


def plan_down(detail: MigrationDetail, applied: set[str]) -> list[Migration]:
    """Applied entries, newest first (reverse detail order), up to max_count.

    Every planned entry must carry down SQL: checking the whole plan before reverting
    anything means a missing down section never leaves a half-reverted run.
    """
    plan = _limited(
        (m for m in reversed(detail.migrations) if m.version in applied), detail.max_count
    )
    for migration in plan:
        if not migration.has_sql:
            raise MigrationError(f"migration {migration.version} has no down SQL")
    return plan


def plan_for(detail: MigrationDetail, applied: set[str]) -> list[Migration]:
    return (
        plan_up(detail, applied) if detail.direction is Direction.UP else plan_down(detail, applied)
    )


# --- running ------------------------------------------------------------------------------


def run_plan(
    direction: Direction,
    plan: Sequence[Migration],
    apply: Callable[[Migration], None],
    is_cancelled: Callable[[], bool],
) -> list[str]:
    """Apply (or revert) each planned version in order; return the versions done.

    Cancellation is checked only between versions: migrations are never killed, because a
    half-run DDL batch is worse than a late stop. Errors follow dbward 0.2 (§12.3): a
    failure before anything was done is a plain MigrationError; after that it becomes a
    PartialMigrationError whose result data lists what was done. `apply` raises a
    DatabaseError; a PartialMigrationError from `apply` means the version's SQL ran but
    its row could not be written, which is partial even for the first version.
    """
    done: list[str] = []
    for migration in plan:
        if is_cancelled():
            pending = len(plan) - len(done)
            if not done:
                raise MigrationError(f"cancelled before {direction.gerund} any migration")
            message = (
                f"cancelled after {direction.gerund} {len(done)} migration(s); "
                f"{pending} not {direction.participle}"
            )
            raise PartialMigrationError(message, partial_result(direction, done, message))
        try:
            apply(migration)
        except PartialMigrationError as exc:
            raise _partial(direction, done, exc) from exc
        except DatabaseError as exc:
            if done:
                raise _partial(direction, done, exc) from exc
            if isinstance(exc, MigrationError):
                raise
            raise MigrationError(str(exc), connectivity=exc.connectivity) from exc
        done.append(migration.version)
    return done


def _partial(direction: Direction, done: list[str], cause: DatabaseError) -> PartialMigrationError:
    message = str(cause)
    error = PartialMigrationError(message, partial_result(direction, done, message))
    # A lost connection still feeds degraded mode even though the result is partial.
    error.connectivity = cause.connectivity
    return error


# --- results ------------------------------------------------------------------------------


def _dumps(value: object) -> str:
    """Compact JSON, non-ASCII kept raw, as dbward 0.2's serde_json writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def done_result(direction: Direction, versions: Sequence[str]) -> str:
    """`{"applied":[…]}` for up, `{"reverted":[…]}` (newest first) for down."""
    return _dumps({direction.done_key: list(versions)})


def up_result(applied: Sequence[str]) -> str:
    return done_result(Direction.UP, applied)


def down_result(reverted: Sequence[str]) -> str:
    return done_result(Direction.DOWN, reverted)


def status_result(applied_versions: Sequence[str]) -> str:
    return _dumps({"applied_versions": list(applied_versions)})


def repair_result(repair: RepairDetail) -> str:
    return _dumps({"repaired": repair.action.value, "version": repair.version})


def partial_result(direction: Direction, done: Sequence[str], error: str) -> str:
    return _dumps({direction.partial_key: list(done), "error": error})


def repair_hint(direction: Direction, version: str) -> str:
    """What an operator runs when the SQL ran but its version row was not written."""
    action = "mark-applied" if direction is Direction.UP else "remove"
    return (
        f"Run 'dbward migrate repair --emergency --action {action} --version {version} "
        "--reason <reason>'"
    )
