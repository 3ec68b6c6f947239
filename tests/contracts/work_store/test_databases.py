"""`DatabaseRepository`: the same behaviour from the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from application.server.ports.work import WorkRepository
from application.server.ports.work.databases import SchemaSnapshot
from tests.contracts.work_store.records import PROD, STAGING, T0, add_request, at


def a_snapshot(**fields: object) -> SchemaSnapshot:
    values: dict[str, object] = {
        "database": PROD.database,
        "environment": PROD.environment,
        "status": "ready",
        "dialect": "postgresql",
        "collected_at": T0,
        "agent_id": "sub-1",
        "snapshot_json": '{"tables":[]}',
    }
    values.update(fields)
    return SchemaSnapshot(**values)  # type: ignore[arg-type]


def test_ensuring_a_database_twice_is_harmless(work: WorkRepository) -> None:
    work.ensure_database(PROD, T0)
    work.ensure_database(PROD, at(1))

    add_request(work, "r1")  # requests refer to their database's row

    assert work.get_request("r1") is not None


def test_a_snapshot_reads_back_per_scope(work: WorkRepository) -> None:
    prod = a_snapshot()
    staging = a_snapshot(
        environment=STAGING.environment,
        status="failed",
        dialect="mysql",
        snapshot_json=None,
        error_message="permission denied",
    )
    work.upsert_schema_snapshot(prod)
    work.upsert_schema_snapshot(staging)

    assert work.get_schema_snapshot(PROD) == prod
    assert work.get_schema_snapshot(STAGING) == staging


def test_a_scope_without_a_snapshot_has_none(work: WorkRepository) -> None:
    assert work.get_schema_snapshot(PROD) is None


def test_the_latest_snapshot_replaces_the_scopes_previous_one(work: WorkRepository) -> None:
    work.upsert_schema_snapshot(a_snapshot())
    latest = a_snapshot(
        status="partial",
        dialect="mysql",
        collected_at=at(60),
        agent_id="sub-2",
        snapshot_json='{"tables":["t"]}',
        error_message="some tables unreadable",
    )

    work.upsert_schema_snapshot(latest)

    assert work.get_schema_snapshot(PROD) == latest
