"""The retention purge: stored result content after its retention, and whole requests after
`[retention].request_ttl_days` (docs/server.md §7.2, §3.2).

- A result's content is deleted once its `expires_at` (stored + the result policy's
  `retention_days`) has passed. Its summary stays (`status = expired`): the request
  still says how it ended, and the result routes answer 410 saying the content was
  purged. Audit `result.purged`.
- A request in a final status whose last change is older than `request_ttl_days` is
  deleted with everything that refers to it (approvals, pending approvers, executions,
  results and their content, dry-run jobs). Its audit events stay: the audit log has its
  own retention. Audit `request.purged`.
- A webhook delivery that was delivered or failed is deleted `request_ttl_days` after it
  finished; pending ones are never purged.
- An agent whose last poll is older than `agent_ttl_days` leaves the registry (a replaced
  pod, a retired host): `GET /api/agents` stays the list of agents that exist, and a
  claim naming no agent is no longer checked against its scopes. Audit `agent.purged`.
  If it polls again it registers again.

Content is deleted *before* the row changes: if the server stops in between, the row
still names the content and the next run deletes it again (a missing file is no error),
so production data is never left on disk with nothing pointing at it. Each row change
and its audit event commit together, guarded, so a request resumed meanwhile, or
another replica's purge that got there first, is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from application.server.audit_events import about_request, audit_event
from application.server.ports.services import ResultContentStore
from application.server.ports.work.executions import ResultSummary
from application.server.requests.common import new_uuid
from application.server.settings import ServerSettings
from application.server.sweeps import SweepJob
from domain.server.request_lifecycle import TERMINAL_STATUSES
from domain.shared.timestamps import format_timestamp

if TYPE_CHECKING:
    from application.server.ports.store import Store

__all__ = ["PURGE_BATCH", "RetentionSweeps"]

#: Rows one purge handles per run; the rest wait for the next run.
PURGE_BATCH = 500


class RetentionSweeps:
    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        result_store: ResultContentStore,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self._store = store
        self._settings = settings
        self._result_store = result_store
        self._new_id = new_id

    @property
    def schedule(self) -> tuple[SweepJob, ...]:
        """(interval, sweep) pairs for `SweepRunner`: all every `record_purge_interval_secs`."""
        interval = float(self._settings.sweeps.record_purge_interval_secs)
        return (
            (interval, self.purge_results),
            (interval, self.purge_requests),
            (interval, self.purge_webhook_deliveries),
            (interval, self.purge_agents),
        )

    def purge_results(self, now: datetime) -> int:
        """Stored content past its retention → deleted; the summary is kept. How many."""
        with self._store.read() as session:
            due = session.work.expired_results(now, PURGE_BATCH)
        purged = 0
        for summary in due:
            self._result_store.delete(summary.storage_key)
            with self._store.write() as session:
                if not session.work.mark_result_purged(summary.id):
                    continue  # another replica purged it first
                record = session.work.get_request(summary.request_id)
                if record is None:
                    continue  # the request itself was purged meanwhile
                purged += 1
                fields = about_request(record)
                fields["resource_type"], fields["resource_id"] = "result", summary.id
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type="result.purged",
                        category="execution",
                        actor=None,
                        reason="result retention passed",
                        metadata=_result_metadata(summary),
                        **fields,
                    )
                )
        return purged

    def purge_requests(self, now: datetime) -> int:
        """Final requests unchanged for `request_ttl_days` → deleted with their rows and
        result content (never their audit events). How many."""
        ttl_days = self._settings.retention.request_ttl_days
        cutoff = now - timedelta(days=ttl_days)
        with self._store.read() as session:
            due = session.work.purgeable_requests(TERMINAL_STATUSES, cutoff, PURGE_BATCH)
        purged = 0
        for record in due:
            with self._store.read() as session:
                stored = [r for r in session.work.results_of_request(record.id) if r.storage_key]
            for summary in stored:
                self._result_store.delete(summary.storage_key)
            with self._store.write() as session:
                if not session.work.delete_request(
                    record.id, allowed_from={record.status}, updated_before=cutoff
                ):
                    continue  # resumed, or purged by another replica, meanwhile
                purged += 1
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type="request.purged",
                        category="request",
                        actor=None,
                        reason=f"request_ttl_days ({ttl_days}) passed",
                        metadata={
                            "status": record.status.value,
                            "requester": record.requester,
                            "created_at": format_timestamp(record.created_at),
                            "updated_at": format_timestamp(record.updated_at),
                            "stored_results_deleted": len(stored),
                        },
                        **about_request(record),
                    )
                )
        return purged

    def purge_webhook_deliveries(self, now: datetime) -> int:
        """Delivered or failed webhook deliveries finished `request_ttl_days` ago → deleted
        (the audit events they announced stay). How many."""
        cutoff = now - timedelta(days=self._settings.retention.request_ttl_days)
        with self._store.write() as session:
            return session.webhooks.purge_finished(cutoff, PURGE_BATCH)

    def purge_agents(self, now: datetime) -> int:
        """Agents with no poll for `agent_ttl_days` → deleted from the registry, each with
        its audit event in the same transaction. How many."""
        ttl_days = self._settings.retention.agent_ttl_days
        with self._store.write() as session:
            gone = session.work.delete_agents_unseen_since(
                now - timedelta(days=ttl_days), PURGE_BATCH
            )
            for row in gone:
                record = row.record
                session.audit.append(
                    audit_event(
                        new_id=self._new_id,
                        now=now,
                        event_type="agent.purged",
                        category="agent",
                        actor=None,
                        reason=f"agent_ttl_days ({ttl_days}) passed without a poll",
                        resource_type="agent",
                        resource_id=record.id,
                        metadata={
                            "agent_name": record.agent_id,
                            "last_seen_at": format_timestamp(record.last_seen_at)
                            if record.last_seen_at is not None
                            else None,
                            "scopes": [str(scope) for scope in record.scopes],
                            "agent_version": record.agent_version,
                        },
                    )
                )
        return len(gone)


def _result_metadata(summary: ResultSummary) -> dict[str, object]:
    return {
        "execution_id": summary.execution_id,
        "stored_at": format_timestamp(summary.stored_at),
        "expires_at": None if summary.expires_at is None else format_timestamp(summary.expires_at),
        "retention_days": summary.retention_days,
        "content_length": summary.content_length,
    }
