"""dbmate-format migration files and the v2 request detail built from them (docs/migrations.md).

The CLI reads a migrations directory and builds the detail of a `migrate_up` /
`migrate_down` request; the server checks that detail before it accepts the request. Both
use this module, so the two sides agree on the format, the version rules and `dir_sha256`.
No I/O here: the caller reads the files and passes `(file name, text)` pairs.

`dir_sha256` is a manifest hash over what the detail carries, so the server can recompute
it: sha256 over, for each entry of `migrations` in order, the bytes
`version \\0 ("1" if transactional else "0") \\0 sha256hex(sql as UTF-8) \\n`.
A detail whose SQL changed after the hash was computed no longer matches it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "DETAIL_FORMAT",
    "MigrationDetailError",
    "MigrationFile",
    "build_detail",
    "detail_json",
    "dir_sha256",
    "new_migration_file_name",
    "parse_migration_file",
    "parse_migration_files",
    "validate_migration_detail",
]

DETAIL_FORMAT = "v2"
UP_MARKER = "-- migrate:up"
DOWN_MARKER = "-- migrate:down"
#: A new file's body (`dbward migrate create`).
NEW_FILE_TEMPLATE = f"{UP_MARKER}\n\n{DOWN_MARKER}\n"
#: Versions are digits (dbmate writes a UTC `YYYYMMDDHHMMSS` timestamp), at most 255 of them.
MAX_VERSION_LENGTH = 255
_VERSION = re.compile(r"[0-9]+")
_FILE_NAME = re.compile(r"([0-9]+)_([^/\\]+)\.sql")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
_DIRECTIONS = ("up", "down")
_KNOWN_KEYS = frozenset(
    {"format", "direction", "versions", "migrations", "dir_sha256", "max_count"}
)


class MigrationDetailError(ValueError):
    """A migration file set or request detail that cannot be used; the message says why."""


@dataclass(frozen=True)
class MigrationFile:
    """One parsed file: its version and both sections (down is None when absent or empty)."""

    file_name: str
    version: str
    up_sql: str
    down_sql: str | None
    up_transactional: bool = True
    down_transactional: bool = True


# --- files --------------------------------------------------------------------------------


def _marker(line: str) -> tuple[str, bool] | None:
    """`("up"|"down", transactional)` when the line is a section marker."""
    stripped = line.strip()
    for direction, marker in (("up", UP_MARKER), ("down", DOWN_MARKER)):
        if stripped == marker or stripped.startswith(marker + " "):
            options = stripped[len(marker) :].split()
            return direction, "transaction:false" not in options
    return None


def parse_migration_file(file_name: str, text: str) -> MigrationFile | None:
    """The migration in one file, or None when it is not one (bad name, no up marker)."""
    match = _FILE_NAME.fullmatch(file_name)
    if match is None or len(match.group(1)) > MAX_VERSION_LENGTH:
        return None
    sections: dict[str, list[str]] = {}
    transactional: dict[str, bool] = {}
    current: str | None = None
    for line in text.splitlines(keepends=True):
        marker = _marker(line)
        if marker is not None:
            current, transactional[marker[0]] = marker
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    if "up" not in sections:
        return None
    down = "".join(sections.get("down", [])).strip()
    return MigrationFile(
        file_name=file_name,
        version=match.group(1),
        up_sql="".join(sections["up"]).strip(),
        down_sql=down or None,
        up_transactional=transactional.get("up", True),
        down_transactional=transactional.get("down", True),
    )


def parse_migration_files(files: Iterable[tuple[str, str]]) -> list[MigrationFile]:
    """The migrations of a directory's `*.sql` files, ascending by version.

    Files are read in name order; those that are not migrations are skipped, but a
    directory with .sql files and no migration at all, or two files of one version, is an
    error naming them.
    """
    named = sorted((name, text) for name, text in files if name.endswith(".sql"))
    parsed = [m for name, text in named if (m := parse_migration_file(name, text)) is not None]
    if named and not parsed:
        raise MigrationDetailError(
            f"no valid migration among {len(named)} .sql file(s): a migration is named "
            f"<version>_<name>.sql and has a '{UP_MARKER}' line"
        )
    parsed.sort(key=lambda m: int(m.version))
    for before, after in itertools.pairwise(parsed):
        if int(before.version) == int(after.version):
            raise MigrationDetailError(
                f"duplicate version {after.version}: {before.file_name} and {after.file_name}"
            )
    return parsed


def new_migration_file_name(name: str, now: datetime, existing: Iterable[str]) -> str:
    """`<UTC timestamp>_<name>.sql`, the timestamp bumped by 1 s while its version is taken."""
    if _NAME.fullmatch(name) is None:
        raise MigrationDetailError(
            f"invalid migration name {name!r}: use letters, digits, '_', '-' or '.'"
        )
    taken = {m.group(1) for n in existing if (m := _FILE_NAME.fullmatch(n)) is not None}
    stamp = now.replace(microsecond=0)
    while stamp.strftime(_TIMESTAMP_FORMAT) in taken:
        stamp += timedelta(seconds=1)
    return f"{stamp.strftime(_TIMESTAMP_FORMAT)}_{name}.sql"


# --- the detail ---------------------------------------------------------------------------


def _entry_hash(version: str, sql: str, transactional: bool) -> bytes:
    digest = hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{version}\0{'1' if transactional else '0'}\0{digest}\n".encode(
        "utf-8", "surrogatepass"
    )


def dir_sha256(entries: Iterable[tuple[str, str, bool]]) -> str:
    """The manifest hash of `(version, sql, transactional)` entries (module docstring)."""
    digest = hashlib.sha256()
    for version, sql, transactional in entries:
        digest.update(_entry_hash(version, sql, transactional))
    return digest.hexdigest()


def build_detail(
    migrations: Sequence[MigrationFile], direction: str, max_count: int | None = None
) -> dict[str, object]:
    """The v2 detail of a `migrate_up` (every migration) or `migrate_down` (those with a down
    section; `max_count` defaults to 1) request."""
    if direction not in _DIRECTIONS:
        raise MigrationDetailError(f"direction must be 'up' or 'down', got {direction!r}")
    if direction == "up":
        entries = [(m.version, m.up_sql, m.up_transactional) for m in migrations]
    else:
        entries = [
            (m.version, m.down_sql, m.down_transactional)
            for m in migrations
            if m.down_sql is not None
        ]
        max_count = 1 if max_count is None else max_count
    if not entries:
        what = "migrations" if direction == "up" else "migrations with a down section"
        raise MigrationDetailError(f"no {what} to run")
    detail: dict[str, object] = {
        "format": DETAIL_FORMAT,
        "direction": direction,
        "versions": [version for version, _, _ in entries],
        "migrations": [
            {"version": version, "sql": sql, "transactional": transactional}
            for version, sql, transactional in entries
        ],
        "dir_sha256": dir_sha256(entries),
    }
    if max_count is not None:
        detail["max_count"] = max_count
    return detail


def detail_json(detail: dict[str, object]) -> str:
    """The detail as sent: canonical (sorted keys, compact) JSON."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- server-side validation ---------------------------------------------------------------


def _version(value: object, where: str) -> str:
    if not isinstance(value, str) or _VERSION.fullmatch(value) is None:
        raise MigrationDetailError(f"{where}: version must be a string of digits, got {value!r}")
    if len(value) > MAX_VERSION_LENGTH:
        raise MigrationDetailError(f"{where}: version longer than {MAX_VERSION_LENGTH} digits")
    return value


def _object(detail: str) -> dict[str, object]:
    try:
        data = json.loads(detail)
    except (ValueError, RecursionError) as exc:
        raise MigrationDetailError(f"detail is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MigrationDetailError("detail must be a JSON object")
    return data


def _entries(data: dict[str, object]) -> list[tuple[str, str, bool]]:
    raw = data.get("migrations")
    if not isinstance(raw, list) or not raw:
        raise MigrationDetailError("migrations must be a non-empty array")
    entries: list[tuple[str, str, bool]] = []
    for index, entry in enumerate(raw):
        where = f"migrations[{index}]"
        if not isinstance(entry, dict):
            raise MigrationDetailError(f"{where} must be an object")
        version = _version(entry.get("version"), where)
        sql = entry.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise MigrationDetailError(f"{where} (version {version}): sql must be non-empty text")
        transactional = entry.get("transactional", True)
        if not isinstance(transactional, bool):
            raise MigrationDetailError(f"{where}: transactional must be a boolean")
        if entries and int(version) <= int(entries[-1][0]):
            problem = "duplicate" if int(version) == int(entries[-1][0]) else "out of order"
            raise MigrationDetailError(
                f"{where}: version {version} is {problem} (after {entries[-1][0]}); "
                "versions must be strictly ascending"
            )
        entries.append((version, sql, transactional))
    return entries


def validate_migration_detail(operation: str, detail: str) -> tuple[str, ...]:
    """Check a migration request's detail; return the versions it names.

    `migrate_up`/`migrate_down`: the v2 format, the direction of the operation, versions of
    digits strictly ascending without duplicates, `versions` equal to the migrations'
    versions, `max_count` a positive integer, and `dir_sha256` equal to the hash recomputed
    from the migrations. `migrate_repair`: an action and a version. `migrate_status`: an
    empty detail (or `{}`). Raises MigrationDetailError naming the first problem.
    """
    if operation == "migrate_status":
        if detail.strip() not in ("", "{}"):
            raise MigrationDetailError("migrate_status takes an empty detail")
        return ()
    if operation == "migrate_repair":
        data = _object(detail)
        if data.get("action") not in ("mark_applied", "remove"):
            raise MigrationDetailError(
                f"action must be 'mark_applied' or 'remove', got {data.get('action')!r}"
            )
        return (_version(data.get("version"), "repair"),)
    direction = {"migrate_up": "up", "migrate_down": "down"}.get(operation)
    if direction is None:
        raise MigrationDetailError(f"{operation} is not a migration operation")
    data = _object(detail)
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise MigrationDetailError(f"unknown detail field(s): {', '.join(unknown)}")
    if data.get("format") != DETAIL_FORMAT:
        raise MigrationDetailError(f"format must be {DETAIL_FORMAT!r}, got {data.get('format')!r}")
    if data.get("direction") != direction:
        raise MigrationDetailError(
            f"{operation} needs direction {direction!r}, got {data.get('direction')!r}"
        )
    entries = _entries(data)
    versions = tuple(version for version, _, _ in entries)
    listed = data.get("versions")
    if not isinstance(listed, list) or tuple(listed) != versions:
        raise MigrationDetailError("versions must list the migrations' versions, in order")
    max_count = data.get("max_count")
    if max_count is not None and (
        isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1
    ):
        raise MigrationDetailError(f"max_count must be a positive integer, got {max_count!r}")
    claimed = data.get("dir_sha256")
    if not isinstance(claimed, str):
        raise MigrationDetailError("dir_sha256 is missing")
    actual = dir_sha256(entries)
    if claimed != actual:
        raise MigrationDetailError(
            f"dir_sha256 does not match the migrations in the detail (claimed {claimed[:12]}…, "
            f"computed {actual[:12]}…): a migration changed after the hash was computed"
        )
    return versions
