"""What audit events say about a request's SQL or migration, per `[audit].redaction`."""

from __future__ import annotations

import json

import pytest

from application.server.requests.audit_detail import FINGERPRINT_CHARS, audit_detail
from application.server.settings import AuditRedaction
from domain.server.sql_classification import Classification
from domain.shared.operations import Operation


class RedactingClassifier:
    """Replaces the whole text with a marker, so tests see which text the audit got."""

    def classify(self, sql: str, dialect: str) -> Classification:
        raise AssertionError("the audit only redacts")

    def redact(self, sql: str, dialect: str) -> str:
        return f"<{dialect}:{len(sql)}>"


@pytest.mark.parametrize(
    ("redaction", "raw"),
    [
        (AuditRedaction.LITERALS, "<mysql:8>"),
        (AuditRedaction.FULL, None),
        (AuditRedaction.NONE, "SELECT 1"),
    ],
)
def test_sql_is_redacted_per_the_setting(redaction: AuditRedaction, raw: str | None) -> None:
    detail = audit_detail(
        "SELECT 1",
        Operation.EXECUTE_SELECT,
        "mysql",
        classifier=RedactingClassifier(),
        redaction=redaction,
    )
    assert detail == ("<mysql:8>", raw)


@pytest.mark.parametrize(
    ("operation", "text", "summary"),
    [
        (Operation.MIGRATE_UP, json.dumps({"versions": ["1", 2]}), "migrate_up: versions=[1,2]"),
        (
            Operation.MIGRATE_REPAIR,
            json.dumps({"action": "remove", "version": "7"}),
            "migrate_repair: action=remove version=7",
        ),
        (Operation.MIGRATE_DOWN, json.dumps({"direction": "down"}), "migrate_down"),
        (Operation.MIGRATE_UP, "{not json", "migrate_up: <unparseable detail>"),
        (Operation.MIGRATE_UP, "[1, 2]", "migrate_up: <unparseable detail>"),
    ],
)
def test_migrations_are_summarised_without_their_sql(
    operation: Operation, text: str, summary: str
) -> None:
    detail = audit_detail(
        text,
        operation,
        "postgresql",
        classifier=RedactingClassifier(),
        redaction=AuditRedaction.LITERALS,
    )
    assert detail == (summary, summary)


def test_the_fingerprint_is_cut_to_its_limit() -> None:
    class Echo(RedactingClassifier):
        def redact(self, sql: str, dialect: str) -> str:
            return sql

    long_sql = "SELECT " + "x" * 2000
    fingerprint, raw = audit_detail(
        long_sql,
        Operation.EXECUTE_DML,
        "postgresql",
        classifier=Echo(),
        redaction=AuditRedaction.LITERALS,
    )
    assert fingerprint == long_sql[:FINGERPRINT_CHARS]
    assert raw == long_sql
