"""Versioned schema migrations for the store (docs/server.md §7.1).

`schema_version` holds one row per applied step (version, description, applied_at); the
database's version is the highest one. `STEPS` is the ordered list of steps, numbered from
1 without gaps. `migrate(engine)` applies the pending ones, each in its own transaction
together with its `schema_version` row, so a step is applied entirely or not at all (DDL is
transactional on both engines). It is idempotent: at the latest version it does nothing.

Two server processes starting at once: on PostgreSQL every migration transaction first
takes `pg_advisory_xact_lock(MIGRATION_LOCK_KEY)`, so the second process waits, then reads
the version the first one committed and skips what is done. On SQLite the engine's
`BEGIN IMMEDIATE` (see `engine.py`) takes the write lock before the version is read, which
serialises the same way. `migrate` needs an engine from `engine.create_store_engine`.

A database whose version is newer than `LATEST_VERSION` was migrated by a newer dbward:
`migrate` refuses it with `SchemaVersionError` instead of running against a schema it does
not know.

Writing a step: append `MigrationStep(n + 1, "...", function)` whose function takes the
`Connection` and runs explicit DDL/DML (`Table.create`, `op`-style `ALTER TABLE` through
`conn.execute(text(...))` that is valid on both engines, data backfills), and update
`schema.py` to the result. Step 1 creates the version-1 tables from `schema.py`'s metadata.
When a later step changes one of those tables, first freeze that table's version-1
definition here (a copy of its `Table(...)` on a private `MetaData`) and have step 1 create
the copy, so a fresh database still goes 1 → 2 → … exactly like an old one; the store's
integration test compares the migrated schema with `schema.py` and fails on any drift.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)

from adapters.store import schema

log = logging.getLogger("dbward.server.store")

#: `pg_advisory_xact_lock` key: the first 8 bytes of sha256("dbward.store.migrations").
MIGRATION_LOCK_NAME = "dbward.store.migrations"
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(MIGRATION_LOCK_NAME.encode()).digest()[:8], "big", signed=True
)

_version_metadata = MetaData()

schema_version = Table(
    "schema_version",
    _version_metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Text, nullable=False),  # schema.TIMESTAMP_FORMAT
)


class SchemaVersionError(RuntimeError):
    """The database's schema cannot be used by this code."""


@dataclass(frozen=True)
class MigrationStep:
    version: int
    description: str
    apply: Callable[[Connection], None]


#: The tables of schema version 1, parents before children (foreign keys).
V1_TABLES: tuple[str, ...] = (
    "databases",
    "users",
    "group_members",
    "tokens",
    "requests",
    "approvals",
    "request_pending_approvers",
    "executions",
    "results",
    "agents",
    "audit_events",
    "schema_snapshots",
    "dry_run_jobs",
    "preflight_jobs",
)


#: Version-1 definitions of the tables later steps changed, frozen here (module docstring).
_v1_metadata = MetaData(naming_convention=schema.NAMING_CONVENTION)

#: `agents` as of version 1: one row per token subject; step 3 keys it by (subject, agent_id).
_v1_agents = Table(
    "agents",
    _v1_metadata,
    Column("id", Text, primary_key=True),
    Column("token_id", Text),
    Column("databases_json", Text, nullable=False, server_default="[]"),
    Column("operations_json", Text, nullable=False, server_default="[]"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("max_concurrent", Integer, nullable=False, server_default=text("4")),
    Column("in_flight", Integer, nullable=False, server_default=text("0")),
    Column("uptime_secs", BigInteger, nullable=False, server_default=text("0")),
    Column("active_jobs_json", Text, nullable=False, server_default="[]"),
    Column("agent_version", Text),
    Column("agent_build", Text),
    Column("agent_ids_json", Text, nullable=False, server_default="[]"),
    Column("degraded_scopes_json", Text, nullable=False, server_default="[]"),
    Column("last_seen_at", Text, nullable=True),
    Column("created_at", Text, nullable=False),
    CheckConstraint("status IN ('active', 'draining')", name="status"),
)

_V1_FROZEN: dict[str, Table] = {"agents": _v1_agents}


def _v1_create_tables(conn: Connection) -> None:
    for name in V1_TABLES:
        table = _V1_FROZEN.get(name, schema.metadata.tables[name])
        table.create(conn)  # with its indexes


def _v2_audit_purge_checkpoints(conn: Connection) -> None:
    schema.audit_purge_checkpoints.create(conn)


def _v3_agents_keyed_by_agent_id(conn: Connection) -> None:
    """`agents` gets `agent_id` in its primary key (docs/server.md §7.3).

    The table is rebuilt (SQLite cannot change a primary key in place): its rows are read,
    the table dropped and re-created, and each row written back under the newest
    `agent_id` its token was seen with, "" when none, so no agent re-registers.
    """
    rows = [dict(row._mapping) for row in conn.execute(select(_v1_agents))]
    _v1_agents.drop(conn)
    schema.agents.create(conn)
    for row in rows:
        seen = json.loads(row.pop("agent_ids_json") or "[]")
        row["agent_id"] = seen[-1] if seen else ""
        conn.execute(insert(schema.agents).values(**row))


def _v4_shared_state(conn: Connection) -> None:
    schema.server_secrets.create(conn)
    schema.result_contents.create(conn)


def _v5_webhook_deliveries(conn: Connection) -> None:
    schema.webhook_deliveries.create(conn)


STEPS: tuple[MigrationStep, ...] = (
    MigrationStep(1, "control-plane tables", _v1_create_tables),
    MigrationStep(2, "audit purge checkpoints", _v2_audit_purge_checkpoints),
    MigrationStep(3, "agents keyed by token subject and agent_id", _v3_agents_keyed_by_agent_id),
    MigrationStep(4, "server secrets and result contents", _v4_shared_state),
    MigrationStep(5, "webhook deliveries", _v5_webhook_deliveries),
)

LATEST_VERSION = STEPS[-1].version

if [step.version for step in STEPS] != list(range(1, len(STEPS) + 1)):
    raise RuntimeError("migration steps must be numbered 1, 2, 3, … without gaps")


def migrate(engine: Engine) -> int:
    """Apply every pending step; return the version the database is now at.

    Raises `SchemaVersionError` when the database is newer than this code.
    """
    while True:
        with engine.begin() as conn:
            _serialise(conn)
            schema_version.create(conn, checkfirst=True)
            current = _read_version(conn)
            _refuse_newer(current)
            if current == LATEST_VERSION:
                return current
            step = STEPS[current]  # version current + 1
            log.info("store schema: applying version %d (%s)", step.version, step.description)
            step.apply(conn)
            conn.execute(
                insert(schema_version).values(
                    version=step.version,
                    description=step.description,
                    applied_at=schema.format_timestamp(datetime.now(UTC)),
                )
            )


def current_version(engine: Engine) -> int:
    """The database's schema version; 0 when it was never migrated. Changes nothing."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(schema_version.name):
            return 0
        return _read_version(conn)


def check_version(engine: Engine) -> None:
    """Raise `SchemaVersionError` unless the database is exactly at `LATEST_VERSION`.

    For processes that use the store without migrating it.
    """
    version = current_version(engine)
    _refuse_newer(version)
    if version < LATEST_VERSION:
        raise SchemaVersionError(
            f"store schema version {version} is older than this dbward's {LATEST_VERSION}: "
            "run the server once to migrate it"
        )


def _serialise(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    # SQLite: the transaction began with BEGIN IMMEDIATE and already holds the write lock.


def _read_version(conn: Connection) -> int:
    version = conn.scalar(select(func.max(schema_version.c.version)))
    return int(version or 0)


def _refuse_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise SchemaVersionError(
            f"store schema version {version} is newer than this dbward knows "
            f"(up to {LATEST_VERSION}): it was migrated by a newer dbward; upgrade this "
            "server, or point it at another database"
        )
