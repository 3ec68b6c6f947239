"""Judging submitted SQL: classification, review, risk and the workflow's decision.

docs/sql-safety.md. One pass that creating a request, preflight and policy resolution
share, so a preflight answers exactly what a create would decide. It reads the scope's
latest schema snapshot (for the dialect and for risk) and writes nothing; what to refuse,
audit or store is the caller's business.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from application.server.ports.services import SqlClassifier
from application.server.ports.work.databases import SchemaSnapshot
from application.server.settings import ServerSettings
from domain.server.risk import RiskAssessment, RiskPolicy, SchemaStatus, assess_risk
from domain.server.schema_model import SchemaModel, UnreadableSnapshot
from domain.server.sql_classification import Classification
from domain.server.sql_review import Review, SqlReviewPolicy, review
from domain.server.workflows import Decision, Workflow, evaluate
from domain.shared.operations import Operation
from domain.shared.scopes import Scope

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["DEFAULT_DIALECT", "JudgeSql", "Judgement", "read_schema"]

#: The dialect SQL is classified in before an agent reported a schema snapshot.
DEFAULT_DIALECT = "postgresql"
#: Parsed snapshots kept: one per scope in use is enough, a snapshot can be megabytes.
_SCHEMA_CACHE_SIZE = 64


@dataclass(frozen=True)
class Judgement:
    """Everything decided about one submission before anything is stored.

    `operation` is the classifier's for SQL (it overrides what the client sent), the given
    one for migrations. `classification`, `review` and `risk` are None for migrations;
    `review` is None too for SQL that could not be parsed. `decision` is None when no
    workflow matches.
    """

    scope: Scope
    operation: Operation
    dialect: str
    classification: Classification | None
    review_policy: SqlReviewPolicy
    review: Review | None
    schema_status: SchemaStatus
    risk: RiskAssessment | None
    workflow: Workflow | None
    decision: Decision | None


class JudgeSql:
    """Runs the judgement; stateless apart from the settings and the store it reads."""

    def __init__(
        self, *, store: Store, settings: ServerSettings, classifier: SqlClassifier
    ) -> None:
        self._store = store
        self._settings = settings
        self._classifier = classifier
        self._schemas: OrderedDict[tuple[object, ...], tuple[SchemaStatus, SchemaModel | None]]
        self._schemas = OrderedDict()
        self._lock = threading.Lock()

    def judge(self, scope: Scope, operation: Operation, detail: str) -> Judgement:
        with self._store.read() as session:
            snapshot = session.work.get_schema_snapshot(scope)
        dialect = snapshot.dialect if snapshot is not None else DEFAULT_DIALECT
        status, schema = self._schema(snapshot)
        classification: Classification | None = None
        if not operation.is_migration:
            classification = self._classifier.classify(detail, dialect)
            operation = classification.operation
        workflow = self._settings.workflow_for(scope.database, scope.environment, operation)
        policy = self._settings.review_policy_for(scope.database, scope.environment)
        findings = None
        if classification is not None and not classification.parse_failed:
            findings = review(classification, policy)
        risk = assess_risk(
            operation,
            classification,
            findings,
            policy=RiskPolicy.of(workflow.auto_approve if workflow is not None else None),
            schema_status=status,
            schema=schema,
        )
        decision = None
        if workflow is not None:
            decision = evaluate(workflow, None if risk is None else risk.level)
        return Judgement(
            scope=scope,
            operation=operation,
            dialect=dialect,
            classification=classification,
            review_policy=policy,
            review=findings,
            schema_status=status,
            risk=risk,
            workflow=workflow,
            decision=decision,
        )

    def _schema(self, snapshot: SchemaSnapshot | None) -> tuple[SchemaStatus, SchemaModel | None]:
        """`read_schema`, parsed once per uploaded snapshot rather than once per request."""
        if snapshot is None:
            return read_schema(None)
        key = (
            snapshot.database,
            snapshot.environment,
            snapshot.agent_id,
            snapshot.collected_at,
            snapshot.status,
            len(snapshot.snapshot_json or ""),
        )
        with self._lock:
            cached = self._schemas.get(key)
            if cached is not None:
                self._schemas.move_to_end(key)
                return cached
        parsed = read_schema(snapshot)
        with self._lock:
            self._schemas[key] = parsed
            while len(self._schemas) > _SCHEMA_CACHE_SIZE:
                self._schemas.popitem(last=False)
        return parsed


def read_schema(snapshot: SchemaSnapshot | None) -> tuple[SchemaStatus, SchemaModel | None]:
    """The snapshot's status for risk, and its tables when it is ready and readable."""
    if snapshot is None:
        return SchemaStatus.NOT_SYNCED, None
    if snapshot.status != "ready" or not snapshot.snapshot_json:
        return SchemaStatus.FAILED, None
    try:
        return SchemaStatus.READY, SchemaModel.from_snapshot(json.loads(snapshot.snapshot_json))
    except (ValueError, UnreadableSnapshot):
        return SchemaStatus.FAILED, None
