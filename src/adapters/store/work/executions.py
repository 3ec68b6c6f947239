"""`ExecutionRepository` over SQLAlchemy Core: `executions` and their `results`."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    bindparam,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from adapters.store.prepared import prepared
from adapters.store.schema import approvals, executions, requests, results
from adapters.store.work.base import (
    SqlRepository,
    database_id,
    optional_timestamp,
    parse_optional_timestamp,
)
from adapters.store.work.requests import request_from_row
from application.server.ports.work.executions import (
    LEASE_EXPIRED_MESSAGE,
    LIVE_EXECUTION_STATUSES,
    RESULT_PURGED,
    RESULT_STORED,
    ExecutionAlreadyClaimed,
    ExecutionCompletion,
    ExecutionRecord,
    ExecutionStatus,
    ListedResult,
    ResultQuery,
    ResultSummary,
)
from application.server.ports.work.requests import RequestRecord
from domain.server.approvals import ApprovalAction
from domain.shared.scopes import Scope
from domain.shared.timestamps import format_timestamp, parse_timestamp

_LIVE = tuple(status.value for status in LIVE_EXECUTION_STATUSES)


def _execution(row: Row[Any]) -> ExecutionRecord:
    m = row._mapping
    return ExecutionRecord(
        id=m["id"],
        request_id=m["request_id"],
        agent_id=m["agent_id"],
        status=ExecutionStatus(m["status"]),
        token=m["token"],
        lease_secs=m["lease_secs"],
        lease_expires_at=parse_timestamp(m["lease_expires_at"]),
        started_at=parse_timestamp(m["started_at"]),
        finished_at=parse_optional_timestamp(m["finished_at"]),
        error_message=m["error_message"],
        created_at=parse_timestamp(m["created_at"]),
    )


def _result(row: Row[Any]) -> ResultSummary:
    m = row._mapping
    return ResultSummary(
        id=m["id"],
        request_id=m["request_id"],
        execution_id=m["execution_id"],
        success=bool(m["success"]),
        rows_affected=m["rows_affected"],
        duration_ms=m["duration_ms"],
        truncated=bool(m["truncated"]),
        truncation_reason=m["truncation_reason"],
        error_message=m["error_message"],
        storage_backend=m["storage_backend"],
        storage_key=m["storage_key"],
        content_length=m["content_length"],
        checksum_sha256=m["checksum_sha256"],
        retention_days=m["retention_days"],
        status=m["status"],
        stored_at=parse_timestamp(m["stored_at"]),
        expires_at=parse_optional_timestamp(m["expires_at"]),
    )


# Built once and executed with parameter dicts: `insert(...).values(**row)` coerces every
# column again on each call, a visible share of the claim and result routes' profiles.
_INSERT_EXECUTION = prepared(insert(executions))
#: The partial unique index `ux_executions_one_claimed` as a conflict target: a second
#: claimed execution of a request is not inserted (nothing returned) instead of raising, so no
#: savepoint is needed to keep the caller's transaction usable (SQLite and PostgreSQL
#: both take `ON CONFLICT (request_id) WHERE status = 'claimed' DO NOTHING`).
_ONE_CLAIMED: dict[str, Any] = {
    "index_elements": [executions.c.request_id],
    "index_where": text("status = 'claimed'"),
}
_INSERT_EXECUTION_UNLESS_CLAIMED = {
    "sqlite": prepared(
        sqlite_insert(executions).on_conflict_do_nothing(**_ONE_CLAIMED).returning(executions.c.id)
    ),
    "postgresql": prepared(
        postgresql_insert(executions)
        .on_conflict_do_nothing(**_ONE_CLAIMED)
        .returning(executions.c.id)
    ),
}
_INSERT_RESULT = prepared(insert(results))
_GET_EXECUTION = prepared(select(executions).where(executions.c.id == bindparam("_id")))
#: Built once: every result completes its live execution (a late one builds its own).
_COMPLETE_LIVE = prepared(
    update(executions)
    .where(executions.c.id == bindparam("_id"), executions.c.status.in_(_LIVE))
    .values(
        status=bindparam("_status"),
        finished_at=bindparam("_finished_at"),
        error_message=bindparam("_error_message"),
    )
)
_LATEST_RESULT = prepared(
    select(results)
    .where(results.c.request_id == bindparam("_request_id"))
    .order_by(results.c.stored_at.desc(), results.c.id.desc())
    .limit(1)
)


class SqlExecutionRepository(SqlRepository):
    # --- executions ---------------------------------------------------------------------

    def insert_execution(self, record: ExecutionRecord) -> None:
        values = dict(
            id=record.id,
            request_id=record.request_id,
            agent_id=record.agent_id,
            status=record.status.value,
            token=record.token,
            lease_secs=record.lease_secs,
            lease_expires_at=format_timestamp(record.lease_expires_at),
            started_at=format_timestamp(record.started_at),
            finished_at=optional_timestamp(record.finished_at),
            error_message=record.error_message,
            created_at=format_timestamp(record.created_at),
        )
        statement = _INSERT_EXECUTION_UNLESS_CLAIMED.get(self._conn.dialect.name)
        if statement is None:
            inserted = self._insert_or_conflict(_INSERT_EXECUTION, values)
        else:
            # RETURNING names the inserted row; nothing comes back when it conflicted.
            inserted = self._conn.execute(statement, values).first() is not None
        if not inserted:
            raise ExecutionAlreadyClaimed(record.request_id)

    def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return self._first(_GET_EXECUTION, _execution, {"_id": execution_id})

    def list_executions(self, request_id: str, limit: int) -> list[ExecutionRecord]:
        return self._all(
            select(executions)
            .where(executions.c.request_id == request_id)
            .order_by(executions.c.created_at.desc(), executions.c.id.desc())
            .limit(limit),
            _execution,
        )

    def count_executions(self, request_id: str) -> int:
        count = self._conn.scalar(
            select(func.count())
            .select_from(executions)
            .where(executions.c.request_id == request_id)
        )
        return int(count or 0)

    def _newer_than(self, execution_id: str, request_id: str, created_at: str) -> Any:
        """Another execution of the request created at or after this one (a tie counts)."""
        other = executions.alias("other")
        return exists().where(
            other.c.request_id == request_id,
            other.c.id != execution_id,
            other.c.created_at >= created_at,
        )

    def newer_execution_exists(self, execution: ExecutionRecord) -> bool:
        query = select(
            self._newer_than(
                execution.id, execution.request_id, format_timestamp(execution.created_at)
            )
        )
        return bool(self._conn.scalar(query))

    def extend_lease(self, execution_id: str, lease_expires_at: datetime) -> bool:
        result = self._conn.execute(
            update(executions)
            .where(
                executions.c.id == execution_id,
                executions.c.status == ExecutionStatus.CLAIMED.value,
            )
            .values(lease_expires_at=format_timestamp(lease_expires_at))
        )
        return result.rowcount == 1

    def complete_execution(self, execution_id: str, completion: ExecutionCompletion) -> bool:
        values = {
            "status": completion.status.value,
            "finished_at": format_timestamp(completion.finished_at),
            "error_message": completion.error_message,
        }
        if not completion.late:
            parameters = {"_id": execution_id, **{f"_{k}": v for k, v in values.items()}}
            return self._conn.execute(_COMPLETE_LIVE, parameters).rowcount == 1
        current = self.get_execution(execution_id)
        if current is None:
            return False
        statement = (
            update(executions)
            .where(
                executions.c.id == execution_id,
                executions.c.status == ExecutionStatus.FAILED.value,
                executions.c.error_message == LEASE_EXPIRED_MESSAGE,
                ~self._newer_than(
                    execution_id, current.request_id, format_timestamp(current.created_at)
                ),
            )
            .values(**values)
        )
        return self._conn.execute(statement).rowcount == 1

    def expired_leases(self, now: datetime, limit: int) -> list[ExecutionRecord]:
        return self._all(
            select(executions)
            .where(
                executions.c.status.in_(_LIVE),
                executions.c.lease_expires_at < format_timestamp(now),
            )
            .order_by(executions.c.lease_expires_at)
            .limit(limit),
            _execution,
        )

    def fail_expired_lease(self, execution_id: str, now: datetime) -> bool:
        stamp = format_timestamp(now)
        result = self._conn.execute(
            update(executions)
            .where(
                executions.c.id == execution_id,
                executions.c.status.in_(_LIVE),
                executions.c.lease_expires_at < stamp,
            )
            .values(
                status=ExecutionStatus.FAILED.value,
                finished_at=stamp,
                error_message=LEASE_EXPIRED_MESSAGE,
            )
        )
        return result.rowcount == 1

    # --- results ------------------------------------------------------------------------

    def insert_result(self, summary: ResultSummary) -> None:
        self._conn.execute(
            _INSERT_RESULT,
            dict(
                id=summary.id,
                request_id=summary.request_id,
                execution_id=summary.execution_id,
                success=summary.success,
                rows_affected=summary.rows_affected,
                duration_ms=summary.duration_ms,
                truncated=summary.truncated,
                truncation_reason=summary.truncation_reason,
                error_message=summary.error_message,
                storage_backend=summary.storage_backend,
                storage_key=summary.storage_key,
                content_length=summary.content_length,
                checksum_sha256=summary.checksum_sha256,
                retention_days=summary.retention_days,
                status=summary.status,
                stored_at=format_timestamp(summary.stored_at),
                expires_at=optional_timestamp(summary.expires_at),
            ),
        )

    def latest_result(self, request_id: str) -> ResultSummary | None:
        return self._first(_LATEST_RESULT, _result, {"_request_id": request_id})

    def result_for_execution(self, execution_id: str) -> ResultSummary | None:
        return self._first(select(results).where(results.c.execution_id == execution_id), _result)

    def executions_with_results(self, execution_ids: Collection[str]) -> set[str]:
        if not execution_ids:
            return set()
        rows = self._conn.execute(
            select(results.c.execution_id).where(
                results.c.execution_id.in_(sorted(execution_ids)),
                results.c.storage_key != "",
                results.c.status == RESULT_STORED,
            )
        )
        return {row[0] for row in rows}

    def results_of_request(self, request_id: str) -> list[ResultSummary]:
        return self._all(
            select(results)
            .where(results.c.request_id == request_id)
            .order_by(results.c.stored_at, results.c.id),
            _result,
        )

    def list_results(self, query: ResultQuery, *, limit: int, offset: int) -> list[ListedResult]:
        visible = or_(
            _in_scopes(query.every_result_in),
            requests.c.requester == query.subject,
            exists().where(
                approvals.c.request_id == requests.c.id,
                approvals.c.action == ApprovalAction.APPROVE.value,
                approvals.c.actor_id == query.subject,
            ),
            *(_json_array_holds(requests.c.share_with_json, s) for s in query.share_selectors),
        )
        conditions = [_in_scopes(query.scopes), visible]
        if query.database is not None:
            conditions.append(
                requests.c.database_id.startswith(query.database + ":", autoescape=True)
            )
        if query.environment is not None:
            conditions.append(
                requests.c.database_id.endswith(":" + query.environment, autoescape=True)
            )
        rows = self._conn.execute(
            select(results, *_REQUEST_COLUMNS)
            .join(requests, requests.c.id == results.c.request_id)
            .where(*conditions)
            .order_by(results.c.stored_at.desc(), results.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return [ListedResult(summary=_result(row), request=_listed_request(row)) for row in rows]

    def expired_results(self, now: datetime, limit: int) -> list[ResultSummary]:
        return self._all(
            select(results)
            .where(
                results.c.status == RESULT_STORED,
                results.c.storage_key != "",
                results.c.expires_at.is_not(None),
                results.c.expires_at < format_timestamp(now),
            )
            .order_by(results.c.expires_at, results.c.id)
            .limit(limit),
            _result,
        )

    def mark_result_purged(self, result_id: str) -> bool:
        result = self._conn.execute(
            update(results)
            .where(results.c.id == result_id, results.c.status == RESULT_STORED)
            .values(status=RESULT_PURGED)
        )
        return result.rowcount == 1


#: The request's columns in a results listing, labelled apart from the result's own.
_REQUEST_COLUMNS = tuple(column.label(f"req__{column.name}") for column in requests.c)


def _listed_request(row: Row[Any]) -> RequestRecord:
    m = row._mapping
    return request_from_row({column.name: m[f"req__{column.name}"] for column in requests.c})


def _in_scopes(scopes: Collection[Scope]) -> ColumnElement[bool]:
    """`requests.database_id IN (…)`; false for no scopes."""
    if not scopes:
        return false()
    return requests.c.database_id.in_(sorted(database_id(scope) for scope in scopes))


def _json_array_holds(column: Any, value: str) -> ColumnElement[bool]:
    """A JSON array held as text contains the string `value` as an element.

    `share_with_json` is written by `json.dumps`, so an element is its JSON encoding
    between the array's separators; LIKE wildcards in it are escaped (`autoescape`).
    """
    return column.contains(json.dumps(value), autoescape=True)  # type: ignore[no-any-return]
