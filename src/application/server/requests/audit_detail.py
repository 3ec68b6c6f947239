"""What a request's audit events say about its SQL, per `[audit].redaction`.

The raw text stays in the request row for approvers; the audit trail, which more people
read and which is kept longer, gets literal-redacted SQL by default. Migrations are not
classified: their events name the versions that run, never the SQL.
"""

from __future__ import annotations

import json

from application.server.ports.services import SqlClassifier
from application.server.settings import AuditRedaction
from domain.shared.operations import Operation

__all__ = ["FINGERPRINT_CHARS", "SQL_OPERATIONS", "audit_detail"]

#: Audit `detail_fingerprint` is cut to this many characters.
FINGERPRINT_CHARS = 1024
#: The operations whose detail is SQL (the classifier reads it; the others are migrations).
SQL_OPERATIONS = frozenset({Operation.EXECUTE_SELECT, Operation.EXECUTE_DML})


def audit_detail(
    detail: str,
    operation: Operation,
    dialect: str,
    *,
    classifier: SqlClassifier,
    redaction: AuditRedaction,
) -> tuple[str, str | None]:
    """(`detail_fingerprint`, `detail_raw`) for an audit event about `detail`.

    The fingerprint is always the redacted text; `detail_raw` is the raw SQL under
    `none`, nothing under `full`, and the redacted text under `literals`.
    """
    if operation in SQL_OPERATIONS:
        redacted = classifier.redact(detail, dialect)
    else:
        redacted = _migration_summary(operation, detail)
    fingerprint = redacted[:FINGERPRINT_CHARS]
    if redaction is AuditRedaction.NONE:
        return fingerprint, detail
    if redaction is AuditRedaction.FULL:
        return fingerprint, None
    return fingerprint, redacted


def _migration_summary(operation: Operation, detail: str) -> str:
    """Migrations in audit events: what runs, without the SQL (`migrate_up: versions=[…]`)."""
    try:
        data = json.loads(detail) if detail else {}
    except ValueError:
        return f"{operation.value}: <unparseable detail>"
    if not isinstance(data, dict):
        return f"{operation.value}: <unparseable detail>"
    if operation is Operation.MIGRATE_REPAIR:
        return f"{operation.value}: action={data.get('action')} version={data.get('version')}"
    versions = data.get("versions")
    if isinstance(versions, list):
        return f"{operation.value}: versions=[{','.join(str(v) for v in versions)}]"
    return operation.value
