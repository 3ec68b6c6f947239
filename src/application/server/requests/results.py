"""A request's result: waiting for it (`…/result/stream`) and reading it (`…/result/content`).

docs/server.md §1.8. Results are summarised in the store, so a client that reconnects
always gets its result; the body is in the result content store, or, for a stream-only
result, in the result relay for a short while. Who may read a result is
`application.server.requests.result_access`. A result whose content the retention purge
deleted answers 410 on both routes; its summary stays in the store.

The stream is a long-poll: it arms a notifier waiter *before* reading the store, waits on
it, and re-reads at least every second (a notification is a hint; between replicas it
travels by PostgreSQL NOTIFY, docs/server.md §7.4). It waits on `result_topic`, which
only the changes that can end it announce (a result, a final status), so a claim does
not cost it a read. One that times out answers 204 with no body. A body kept in the
store's table is read in the same transaction as the summary that names it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from application.server.ports.result_relay import ResultRelay
from application.server.ports.services import (
    DispatchNotifier,
    ResultContentStore,
    ServerClock,
    result_topic,
)
from application.server.ports.work.executions import ExecutionStatus, ResultSummary
from application.server.requests.common import LONG_POLL_RECHECK_SECS
from application.server.requests.result_access import readable_result
from application.server.settings import ServerSettings
from application.server.store_calls import IN_THREADS
from domain.server.errors import Conflict, Gone, NotFound
from domain.server.execution_policies import DeliveryMode
from domain.server.rbac import Principal
from domain.server.request_lifecycle import RequestStatus

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreCalls, StoreSession
    from application.server.requests.fresh_results import FreshResults

__all__ = [
    "RAN_STATUSES",
    "RESULT_STREAM_SECS",
    "GetResultContent",
    "ResultEnvelope",
    "WaitForResult",
    "result_envelope",
]

#: `GET …/result/stream` holds this long, then answers 204.
RESULT_STREAM_SECS = 300

#: Finished without running: the stream answers a failure naming the status.
_ENDED_UNRUN = (RequestStatus.REJECTED, RequestStatus.CANCELLED, RequestStatus.EXPIRED)
#: Finished running: the stream answers the result.
RAN_STATUSES = (RequestStatus.EXECUTED, RequestStatus.FAILED)
#: The statuses whose result content may be read (a lost execution may have left one).
_MAY_HAVE_RESULT = (RequestStatus.EXECUTED, RequestStatus.FAILED, RequestStatus.EXECUTION_LOST)


@dataclass(frozen=True)
class ResultEnvelope:
    """What result stream and content return (`_dbward_result: true`)."""

    success: bool
    execution_id: str | None = None
    rows_affected: int | None = None
    truncated: bool = False
    error_message: str | None = None
    #: The agent's `result_data` text as stored; None when there is none (a failure, or
    #: stream-only content that is gone). Kept raw: the API layer parses it once.
    result_data_raw: str | None = None

    @property
    def result_data(self) -> Any:
        """`result_data` parsed as JSON, or the text itself when it is not JSON."""
        if self.result_data_raw is None:
            return None
        try:
            return json.loads(self.result_data_raw)
        except ValueError:
            return self.result_data_raw


class WaitForResult:
    """`GET …/result/stream`: the result once the request is done, or nothing in time."""

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        notifier: DispatchNotifier,
        result_store: ResultContentStore,
        result_relay: ResultRelay,
        draining: Callable[[], bool] = lambda: False,
        wait_secs: float = RESULT_STREAM_SECS,
        recheck_secs: float = LONG_POLL_RECHECK_SECS,
        calls: StoreCalls = IN_THREADS,
        fresh: FreshResults | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._notifier = notifier
        self._result_store = result_store
        self._relay = result_relay
        self._draining = draining
        self._wait_secs = wait_secs
        self._recheck_secs = recheck_secs
        self._calls = calls
        self._fresh = fresh

    async def wait(self, principal: Principal, request_id: str) -> ResultEnvelope | None:
        """The result once the request is done; None (→ 204) after `wait_secs`.

        A draining server lets its held streams go at once (204): clients come back to
        another replica.
        """
        fresh = self._fresh
        with self._notifier.arm([result_topic(request_id)]) as waiter:
            since = 0.0 if fresh is None else fresh.moment()
            # Reads the request (and refuses a caller who may not read it) once per call.
            outcome = await self._calls.short(self._final_result, principal, request_id)
            if outcome is not None:
                return await self._with_body(outcome)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._wait_secs
            while (remaining := deadline - loop.time()) > 0 and not self._draining():
                notified = await waiter.wait(min(self._recheck_secs, remaining))
                recorded = None if fresh is None or not notified else fresh.get(request_id, since)
                if recorded is not None:
                    return recorded
                outcome = await self._calls.short(self._final_result, principal, request_id)
                if outcome is not None:
                    return await self._with_body(outcome)
        return None

    async def _with_body(self, outcome: ResultEnvelope | ResultSummary) -> ResultEnvelope:
        """A summary whose body lives outside the store is read from there (a file, or
        an object store) as long work."""
        if isinstance(outcome, ResultEnvelope):
            return outcome
        return await self._calls.long(result_envelope, outcome, self._result_store, self._relay)

    def _final_result(
        self, principal: Principal, request_id: str
    ) -> ResultEnvelope | ResultSummary | None:
        """The result if the request is done, else None (keep waiting); the summary alone
        when its body is stored outside the store's own table (`_with_body` reads it)."""
        with self._store.read() as session:
            record = readable_result(session, self._settings, principal, request_id)
            if record.status in _ENDED_UNRUN:
                return ResultEnvelope(success=False, error_message=f"request {record.status}")
            if record.status not in RAN_STATUSES:
                return None
            summary = session.work.latest_result(record.id)
            if summary is None:
                executed = record.status is RequestStatus.EXECUTED
                return ResultEnvelope(
                    success=executed, error_message=None if executed else "no result was recorded"
                )
            _refuse_purged(summary)
            content = _content_in_session(session, summary, self._result_store)
        if content is None and summary.has_stored_content:
            return summary
        return result_envelope(summary, self._result_store, self._relay, content)


class GetResultContent:
    """`GET …/result/content`: a finished request's result, the latest or one execution's.

    Gone (410) says why a result that existed cannot be read: the request kept nothing
    (`no_store`), it was delivered by stream only and the relay let it go, it expired,
    or its stored body is missing.
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        result_store: ResultContentStore,
        result_relay: ResultRelay,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._result_store = result_store
        self._relay = result_relay

    def get(
        self, principal: Principal, request_id: str, execution_id: str | None = None
    ) -> ResultEnvelope:
        now = self._clock.now()
        with self._store.read() as session:
            record = readable_result(session, self._settings, principal, request_id)
            if record.status not in _MAY_HAVE_RESULT:
                raise NotFound(f"no result: the request is {record.status}")
            if execution_id is not None:
                execution = session.work.get_execution(execution_id)
                if execution is None or execution.request_id != record.id:
                    raise NotFound("execution not found", resource="execution")
                if execution.status is ExecutionStatus.CLAIMED:
                    raise Conflict("the execution is still running")
                summary = session.work.result_for_execution(execution_id)
            else:
                summary = session.work.latest_result(record.id)
        if summary is None:
            raise NotFound("no result was recorded for this request")
        _refuse_purged(summary)
        if not summary.has_stored_content and summary.success:
            if record.no_store:
                raise Gone("the results of this request are not stored")
            policy = self._settings.result_policy_for(record.database, record.environment)
            if (
                policy.delivery_mode is DeliveryMode.STREAM
                and self._relay.get(summary.execution_id) is None
            ):
                raise Gone("this result was delivered by stream only and is not stored")
        if summary.expires_at is not None and summary.expires_at < now:
            raise Gone("the stored result has expired")
        return result_envelope(summary, self._result_store, self._relay)


def _content_in_session(
    session: StoreSession, summary: ResultSummary, result_store: ResultContentStore
) -> bytes | None:
    """The stored body, read in the session that read its summary when it is kept in the
    store's table; None when it is elsewhere (or was written elsewhere before)."""
    if not summary.has_stored_content or not result_store.kept_in_store(summary.content_length):
        return None
    return session.result_contents.get(summary.storage_key)


def result_envelope(
    summary: ResultSummary,
    result_store: ResultContentStore,
    relay: ResultRelay,
    content: bytes | None = None,
) -> ResultEnvelope:
    """The envelope of `summary`, its body from `content` (already read), the content
    store, or else the relay.

    A stored body that is missing is Gone, never a success with `result_data: null`: the
    client would take an empty answer for the real one (docs/server.md §7.4).
    """
    raw: str | None = None
    if summary.has_stored_content:
        if content is None:
            content = result_store.get(summary.storage_key)
        if content is None:
            raise Gone(
                "the result was stored but its content is missing from the result storage; "
                "the request and its outcome (success, rows affected) are still readable"
            )
        raw = content.decode("utf-8", "replace")
    else:
        raw = relay.get(summary.execution_id)
    return ResultEnvelope(
        success=summary.success,
        execution_id=summary.execution_id,
        rows_affected=summary.rows_affected,
        truncated=summary.truncated,
        error_message=summary.error_message,
        result_data_raw=raw,
    )


def _refuse_purged(summary: ResultSummary) -> None:
    """Gone (410) once the retention purge deleted the result's content."""
    if summary.purged:
        kept = "" if summary.retention_days is None else f" ({summary.retention_days} days)"
        raise Gone(
            f"the stored result was purged after its retention period{kept}; "
            "the request and its outcome (success, rows affected) are still readable"
        )
