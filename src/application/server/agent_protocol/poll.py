"""`POST /api/agent/poll`: register the agent, gate its version, hand it work.

Wire-compatible with dbward 0.2; our additions are each optional for an old peer:

* **Long-poll** (docs/agent.md §5 improvement 1): a poll carrying `wait_ms` (capped at 60 s)
  with nothing to return is held until matching work appears or the wait ends. The waiter
  is armed before the store is read, so a dispatch committed in between still wakes it;
  the store is re-read every second anyway, in case a notification was lost. That
  periodic look is shared (`_SharedLook`): one task per set of scopes and operations
  reads the store once a second while polls hold on it and wakes them only when it finds
  work, so 500 idle agents cost the store one look a second and the event loop nothing
  in between. A held poll answers with
  `"wait_ms": <ms held>`, which tells our agent the server long-polls.
* **One row per agent**: the registry is keyed by (token subject, the poll's `agent_id`),
  so agents sharing a token do not overwrite each other (docs/server.md §7.3); the first
  poll of each writes `agent.registered`.
* **Registry writes only when due** (`_RegistryWrites`): a poll rewrites the agent's row
  when something the server acts on changed (scopes, operations, draining, saturation,
  versions, token) or the row this process wrote is `REGISTRY_REFRESH_SECS` old, so an
  agent polling in a busy loop is not a write transaction per poll; such a poll reads its
  work in a read transaction (docs/protocol.md §3.2 step 3).
* **Version gate**: `min_agent_version` is a setting, not the server's own version, and
  versions compare by the one rule of `domain.shared.versions`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from application.server.agent_protocol.claim import ClaimJob
from application.server.audit_events import audit_event
from application.server.ports.services import DispatchNotifier, ServerClock, dispatch_topic
from application.server.ports.work.agents import AgentUpsert
from application.server.ports.work.explain_jobs import DryRunJobRecord, PreflightJobRecord
from application.server.ports.work.requests import RequestRecord
from application.server.requests.common import LONG_POLL_RECHECK_SECS, new_uuid
from application.server.settings import ServerSettings
from application.server.store_calls import IN_THREADS
from domain.server.agent_registry import record_from_poll, validate_poll_scopes
from domain.server.errors import Forbidden, ServerDomainError, Validation
from domain.server.rbac import Permission, Principal, authorize
from domain.shared.jobs import AgentStatus, ClaimedJob, PollClaim, PollRequest
from domain.shared.scopes import Scope
from domain.shared.versions import version_lt

if TYPE_CHECKING:
    from application.server.ports.store import Store, StoreCalls, StoreSession

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_POLL_LIMIT",
    "MAX_DRY_RUN_JOBS",
    "MAX_POLL_LIMIT",
    "MAX_POLL_SCOPES",
    "MAX_POLL_TEXT_CHARS",
    "MAX_POLL_WAIT_MS",
    "REGISTRY_REFRESH_SECS",
    "PollForWork",
    "PollReply",
]

DEFAULT_POLL_LIMIT = 10
MAX_POLL_LIMIT = 20
MAX_DRY_RUN_JOBS = 10
#: The longest hold a poll may ask for.
MAX_POLL_WAIT_MS = 60_000
#: At most this many scopes (and as many degraded scopes) in one poll: each is a term of
#: the store's `(database = ? AND environment = ?) OR …` filter.
MAX_POLL_SCOPES = 256
#: Longest `agent_version` / `agent_build`, and `active_jobs[]` request id / operation.
MAX_POLL_TEXT_CHARS = 256
#: `max_concurrent` / `in_flight` for the preflight budget when a poll has no status.
_PREFLIGHT_DEFAULT_MAX_CONCURRENT = 1
#: A poll that changes nothing the server acts on rewrites the agent's row (last seen,
#: load, active jobs, uptime) at most this often: far inside the 60 s after which an agent
#: counts as offline.
REGISTRY_REFRESH_SECS = 5.0
#: Beyond this many remembered agents, entries older than the refresh period are dropped.
_REMEMBERED_AGENTS = 1024


#: What makes a poll's registry write due at once: what claims, dispatch hints and the
#: agents listing act on, as opposed to the load figures refreshed every few seconds.
_RegistryKey = tuple[object, ...]


def _registry_key(upsert: AgentUpsert) -> _RegistryKey:
    record = upsert.record
    return (
        upsert.token_id,
        record.scopes,
        record.degraded_scopes,
        upsert.operations,
        record.status,
        record.max_concurrent,
        record.in_flight >= record.max_concurrent,
        record.agent_version,
        record.agent_build,
    )


class _RegistryWrites:
    """What this process last wrote to each agent's row, and when.

    Only this process's own writes are remembered: after a restart the first poll of
    each agent writes again, and with replicas each one rewrites the row at least every
    `REGISTRY_REFRESH_SECS` for the polls it serves, so a row another replica rewrote in
    between is put right within that time.
    """

    def __init__(self, refresh_secs: float) -> None:
        self._refresh = timedelta(seconds=refresh_secs)
        self._written: dict[tuple[str, str], tuple[_RegistryKey, datetime]] = {}

    def due(self, upsert: AgentUpsert, now: datetime) -> bool:
        entry = self._written.get((upsert.record.id, upsert.record.agent_id))
        return entry is None or entry[0] != _registry_key(upsert) or now - entry[1] >= self._refresh

    def wrote(self, upsert: AgentUpsert, now: datetime) -> None:
        if len(self._written) >= _REMEMBERED_AGENTS:
            cutoff = now - self._refresh
            self._written = {key: e for key, e in self._written.items() if e[1] > cutoff}
        self._written[(upsert.record.id, upsert.record.agent_id)] = (_registry_key(upsert), now)


class _NewestPolls:
    """Which poll of each agent (token subject, `agent_id`) reached this process last.

    Only that one may have its jobs claimed (§3.2 step 9). An agent that gave up a held
    poll (a shutdown signal, a database gone down or back) has sent a newer one since, so
    the older poll, still held here, answers its jobs unclaimed and they stay dispatched
    for whoever takes them. Forgetting everything past `_REMEMBERED_AGENTS` agents only
    turns the claims of the polls then held into offers.
    """

    def __init__(self) -> None:
        self._newest: dict[tuple[str, str | None], int] = {}
        self._numbers = itertools.count()

    def started(self, subject: str, agent_id: str | None) -> int:
        if len(self._newest) >= _REMEMBERED_AGENTS:
            self._newest.clear()
        number = next(self._numbers)
        self._newest[(subject, agent_id)] = number
        return number

    def is_newest(self, subject: str, agent_id: str | None, number: int) -> bool:
        return self._newest.get((subject, agent_id)) == number


#: What a periodic look depends on: scopes, operations, whether jobs and preflights count.
_LookKey = tuple[tuple[Scope, ...], tuple[str, ...], bool, bool]


class _SharedLook:
    """The held polls' periodic "is there work?" reads: one task per key, one read per
    period, for as long as a poll holds on that key.

    A held poll waits only for its notifications and its deadline; the key's task reads
    the store every `period_secs` and, when it finds work nobody was notified of, wakes
    the polls of the key's scopes (`wake`), which then look as any woken poll does. An
    idle held poll therefore costs the loop nothing from one period to the next, however
    many are held, and a dispatch nobody was notified of is seen within one period.
    """

    def __init__(
        self, period_secs: float, calls: StoreCalls, wake: Callable[[_LookKey], None]
    ) -> None:
        self._period = period_secs
        self._calls = calls
        self._wake = wake
        #: Per key: the polls holding on it, and its task.
        self._watches: dict[_LookKey, tuple[int, asyncio.Task[None]]] = {}

    @contextmanager
    def holding(self, key: _LookKey, look: Callable[[], bool]) -> Iterator[None]:
        """While the block runs, `key` is watched (its task started by the first holder,
        with that poll's `look`, and stopped when the last one leaves)."""
        holders, task = self._watches.get(key, (0, None))
        if task is None:
            task = asyncio.ensure_future(self._watch(key, look))
        self._watches[key] = (holders + 1, task)
        try:
            yield
        finally:
            holders, task = self._watches[key]
            if holders == 1:
                del self._watches[key]
                task.cancel()
            else:
                self._watches[key] = (holders - 1, task)

    async def _watch(self, key: _LookKey, look: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                found = await self._calls.short(look)
            except Exception:  # the store is down: the polls still hold, try next period
                log.warning("a held poll's periodic look failed", exc_info=True)
                continue
            if found:
                self._wake(key)


@dataclass(frozen=True)
class PollReply:
    jobs: tuple[RequestRecord, ...] = ()
    dry_run_jobs: tuple[DryRunJobRecord, ...] = ()
    preflight_jobs: tuple[PreflightJobRecord, ...] = ()
    server_version: str = ""
    min_agent_version: str = ""
    upgrade_required: bool = False
    #: Our additive echo: how long the poll was held; None when no hold was honoured.
    wait_ms: int | None = None
    #: The server is draining: the answer is the bare `{"jobs": []}`.
    draining: bool = False
    #: Jobs claimed for the agent because its poll asked (§3.2 step 9, additive).
    claimed_jobs: tuple[ClaimedJob, ...] = ()

    @property
    def has_work(self) -> bool:
        return bool(self.jobs or self.dry_run_jobs or self.preflight_jobs)


async def _always_connected() -> bool:
    return True


class PollForWork:
    """One agent poll: the registry update, then the jobs it may take, perhaps after a hold.

    Async because a held poll waits on the event loop, not in a thread; store work runs
    where `calls` puts short work.
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: ServerSettings,
        clock: ServerClock,
        notifier: DispatchNotifier,
        server_version: str,
        draining: Callable[[], bool] = lambda: False,
        new_id: Callable[[], str] = new_uuid,
        recheck_secs: float = LONG_POLL_RECHECK_SECS,
        registry_refresh_secs: float = REGISTRY_REFRESH_SECS,
        calls: StoreCalls = IN_THREADS,
        claim_job: ClaimJob | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._notifier = notifier
        self._server_version = server_version
        self._draining = draining
        self._new_id = new_id
        self._calls = calls
        self._claim_job = claim_job
        self._newest_polls = _NewestPolls()
        self._looks = _SharedLook(recheck_secs, calls, self._wake_key)
        self._registry_writes = _RegistryWrites(registry_refresh_secs)

    async def poll(
        self,
        principal: Principal,
        body: PollRequest,
        connected: Callable[[], Awaitable[bool]] = _always_connected,
    ) -> PollReply:
        """§3.2, in order; then, with `wait_ms` and nothing to return, the hold; then, when
        the poll asks for it, the claim of the jobs it answers with. Nothing is claimed
        for an agent that went away while its poll was held (`connected` says whether it
        still waits for the answer), nor for a poll the agent has since replaced with a
        newer one (`_NewestPolls`): their jobs stay dispatched for others."""
        number = self._newest_polls.started(principal.subject_id, body.agent_id)

        async def may_claim() -> bool:
            newest = self._newest_polls.is_newest(principal.subject_id, body.agent_id, number)
            return newest and await connected()

        reply = await self._poll(principal, body, may_claim)
        claim_job = self._claim_job
        if body.claim is None or not reply.jobs or reply.claimed_jobs or claim_job is None:
            return reply
        if not await may_claim():
            return reply
        return await self._claim_for_agent(claim_job, principal, body, body.claim, reply)

    async def _claim_for_agent(
        self,
        claim_job: ClaimJob,
        principal: Principal,
        body: PollRequest,
        claim: PollClaim,
        reply: PollReply,
    ) -> PollReply:
        """§3.2 step 9: each job claimed as the agent's own claim call would (§3.3), one
        transaction each. A job whose claim is refused stays among the offered `jobs`:
        the agent's claim call then meets the same answer and handles it as always
        (a lost race silently, any other refusal logged and backed off)."""
        claimed: list[ClaimedJob] = []
        offered: list[RequestRecord] = []
        for job in reply.jobs:
            try:
                claimed.append(
                    await self._calls.short(
                        partial(claim_job.claim, for_poll=True),
                        principal,
                        job.id,
                        claim.lease_duration_secs,
                        body.agent_id,
                    )
                )
            except ServerDomainError:
                offered.append(job)
        return replace(reply, jobs=tuple(offered), claimed_jobs=tuple(claimed))

    async def _poll(
        self,
        principal: Principal,
        body: PollRequest,
        may_claim: Callable[[], Awaitable[bool]],
    ) -> PollReply:
        if self._draining():
            return PollReply(draining=True)
        if not principal.is_agent:
            raise Forbidden("agent token required")
        _check_poll_sizes(body)
        scopes = validate_poll_scopes(body.capabilities.scopes)
        degraded = validate_poll_scopes(body.degraded_scopes) if body.degraded_scopes else ()
        authorize(principal, Permission.AGENT_OPERATE)
        upgrade = bool(body.agent_version) and version_lt(
            body.agent_version or "", self._settings.min_agent_version
        )
        wait_ms = min(max(body.wait_ms, 0), MAX_POLL_WAIT_MS)
        limit = min(DEFAULT_POLL_LIMIT if body.limit is None else body.limit, MAX_POLL_LIMIT)
        if wait_ms == 0 or upgrade:
            return await self._calls.short(
                self._poll_once, principal, body, scopes, degraded, limit, upgrade
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with self._notifier.arm([dispatch_topic(scope) for scope in scopes]) as waiter:
            reply = await self._calls.short(
                self._poll_once, principal, body, scopes, degraded, limit, upgrade
            )
            if reply.jobs or reply.preflight_jobs:
                return replace(reply, wait_ms=0)
            if reply.has_work:
                # Only dry-run jobs: answer now, without the echo, so an agent that cannot
                # take them paces itself instead of re-polling into the same answer.
                return reply
            deadline = started + wait_ms / 1000
            key = _look_key(body, scopes, limit)
            with self._looks.holding(key, partial(self._has_work, body, scopes, limit)):
                while (remaining := deadline - loop.time()) > 0:
                    if not await waiter.wait(remaining):
                        break
                    if self._draining():
                        return PollReply(draining=True)
                    named = waiter.named_jobs()
                    if named is not None:
                        taken = await self._take_named(
                            principal, body, scopes, limit, named, may_claim
                        )
                        if taken is None:
                            continue
                        reply = taken
                        break
                    # A wake-up names a dispatch in these scopes (or the key's periodic
                    # look found one): take it at once, in one transaction.
                    reply = await self._calls.short(
                        self._poll_once, principal, body, scopes, degraded, limit, upgrade
                    )
                    if reply.has_work:
                        break
        # Rounded, not truncated: float arithmetic makes a full 400 ms hold 399.99… ms.
        held = max(round((loop.time() - started) * 1000), 0)
        if not reply.has_work and not reply.claimed_jobs:
            await self._calls.short(self._touch, principal, body, scopes, degraded)
        return replace(reply, wait_ms=held)

    async def _take_named(
        self,
        principal: Principal,
        body: PollRequest,
        scopes: tuple[Scope, ...],
        limit: int,
        named: tuple[RequestRecord, ...],
        may_claim: Callable[[], Awaitable[bool]],
    ) -> PollReply | None:
        """A held poll woken by dispatches that named their requests (request creation
        does): the ones this poll would have found are claimed for the agent (the claim
        reads the request again in its own transaction, so a named request another poll
        took, or one cancelled since, is refused there), or offered when the poll does
        not ask for claims or may not claim now; no read transaction looks for them
        first. None keeps the poll held: nothing named is for it, or every claim was
        refused (another agent won; a refusal of any other kind is met by the periodic
        look within a second, which offers the job as before). Work the names leave out
        (dry runs, preflights, older dispatches) is found by the agent's next poll."""
        jobs = _wanted(named, body, scopes, limit)
        if not jobs:
            return None
        offer = PollReply(
            jobs=jobs,
            server_version=self._server_version,
            min_agent_version=self._settings.min_agent_version,
        )
        claim_job = self._claim_job
        if body.claim is None or claim_job is None or not await may_claim():
            return offer
        claimed = await self._claim_for_agent(claim_job, principal, body, body.claim, offer)
        return claimed if claimed.claimed_jobs else None

    def _poll_once(
        self,
        principal: Principal,
        body: PollRequest,
        scopes: tuple[Scope, ...],
        degraded: tuple[Scope, ...],
        limit: int,
        upgrade: bool,
    ) -> PollReply:
        now = self._clock.now()
        upsert = _registry_upsert(principal, body, scopes, degraded, now)
        register = self._registry_writes.due(upsert, now)
        jobs: list[RequestRecord] = []
        dry_runs: list[DryRunJobRecord] = []
        preflights: list[PreflightJobRecord] = []
        # A write transaction only to write the row or to claim preflight jobs.
        write = register
        if not register and not upgrade:
            with self._store.read() as session:
                jobs = _not_running_here(session, body, scopes, limit)
                dry_runs = session.work.pending_dry_run_jobs(scopes, MAX_DRY_RUN_JOBS)
                budget = _preflight_budget(body.status, len(jobs))
                write = budget > 0 and session.work.has_pending_preflight(scopes, now)
        if write:
            with self._store.write() as session:
                if register:
                    self._register(session, principal, body, upsert)
                if not upgrade:
                    jobs = _not_running_here(session, body, scopes, limit)
                    dry_runs = session.work.pending_dry_run_jobs(scopes, MAX_DRY_RUN_JOBS)
                    budget = _preflight_budget(body.status, len(jobs))
                    if budget > 0:
                        preflights = session.work.claim_preflight_jobs(
                            scopes, principal.subject_id, self._new_id(), now, budget
                        )
            if register:
                self._registry_writes.wrote(upsert, now)
        return PollReply(
            jobs=tuple(jobs),
            dry_run_jobs=tuple(dry_runs),
            preflight_jobs=tuple(preflights),
            server_version=self._server_version,
            min_agent_version=self._settings.min_agent_version,
            upgrade_required=upgrade,
        )

    def _wake_key(self, key: _LookKey) -> None:
        """The key's periodic look found work: wake the polls held on its scopes."""
        for scope in key[0]:
            self._notifier.notify(dispatch_topic(scope))

    def _has_work(self, body: PollRequest, scopes: tuple[Scope, ...], limit: int) -> bool:
        """A read-only look while holding: is there anything `_poll_once` would return?"""
        now = self._clock.now()
        with self._store.read() as session:
            if limit > 0 and session.work.dispatched_requests(
                scopes, body.capabilities.operations, 1
            ):
                return True
            if session.work.pending_dry_run_jobs(scopes, 1):
                return True
            return _preflight_budget(body.status, 0) > 0 and (
                session.work.has_pending_preflight(scopes, now)
            )

    def _touch(
        self,
        principal: Principal,
        body: PollRequest,
        scopes: tuple[Scope, ...],
        degraded: tuple[Scope, ...],
    ) -> None:
        """After an empty hold: the agent was here all along, so it is not offline."""
        now = self._clock.now()
        upsert = _registry_upsert(principal, body, scopes, degraded, now)
        if not self._registry_writes.due(upsert, now):
            return
        with self._store.write() as session:
            self._register(session, principal, body, upsert)
        self._registry_writes.wrote(upsert, now)

    def _register(
        self,
        session: StoreSession,
        principal: Principal,
        body: PollRequest,
        upsert: AgentUpsert,
    ) -> None:
        now = upsert.record.last_seen_at
        assert now is not None
        if session.work.upsert_agent(upsert, now):
            session.audit.append(
                audit_event(
                    new_id=self._new_id,
                    now=now,
                    event_type="agent.registered",
                    category="agent",
                    actor=principal,
                    resource_type="agent",
                    resource_id=principal.subject_id,
                    metadata={
                        "agent_name": upsert.record.agent_id,
                        "scopes": [str(scope) for scope in upsert.record.scopes],
                        "agent_version": body.agent_version,
                        "agent_build": body.agent_build,
                    },
                )
            )


def _registry_upsert(
    principal: Principal,
    body: PollRequest,
    scopes: tuple[Scope, ...],
    degraded: tuple[Scope, ...],
    now: datetime,
) -> AgentUpsert:
    """The registry row a poll stands for."""
    record = record_from_poll(
        principal.subject_id,
        scopes,
        body.status,
        now,
        agent_id=body.agent_id,
        degraded_scopes=degraded,
        agent_version=body.agent_version,
        agent_build=body.agent_build,
    )
    return AgentUpsert(
        record=record, operations=body.capabilities.operations, token_id=principal.token_id
    )


def _not_running_here(
    session: StoreSession, body: PollRequest, scopes: tuple[Scope, ...], limit: int
) -> list[RequestRecord]:
    """§3.2 step 4, less the requests the agent lists in `status.active_jobs`: it is
    claiming them already, so offering them again would only answer the poll at once
    instead of holding it for the next dispatch."""
    running = _running_here(body)
    fetched = limit + len(running) if limit > 0 else 0
    jobs = session.work.dispatched_requests(scopes, body.capabilities.operations, fetched)
    return [job for job in jobs if job.id not in running][:limit]


def _running_here(body: PollRequest) -> set[str]:
    """The requests the agent lists in `status.active_jobs`."""
    return {job.request_id for job in body.status.active_jobs} if body.status else set()


def _wanted(
    named: tuple[RequestRecord, ...], body: PollRequest, scopes: tuple[Scope, ...], limit: int
) -> tuple[RequestRecord, ...]:
    """Of the named dispatches, what `_not_running_here` would return: in the poll's
    scopes and operations, not listed as running, at most `limit`."""
    running = _running_here(body)
    operations = set(body.capabilities.operations)
    unique = {job.id: job for job in named}.values()
    wanted = [
        job
        for job in unique
        if job.scope in scopes
        and (not operations or job.operation in operations)
        and job.id not in running
    ]
    return tuple(wanted[: max(limit, 0)])


def _look_key(body: PollRequest, scopes: tuple[Scope, ...], limit: int) -> _LookKey:
    """Everything `_has_work` reads from a poll, and nothing else."""
    operations = tuple(sorted(op.value for op in body.capabilities.operations))
    return (scopes, operations, limit > 0, _preflight_budget(body.status, 0) > 0)


def _preflight_budget(status: AgentStatus | None, jobs: int) -> int:
    """§3.2 step 7: `max_concurrent - in_flight - in_flight_preflight - jobs`, at least 0."""
    if status is None:
        return max(_PREFLIGHT_DEFAULT_MAX_CONCURRENT - jobs, 0)
    return max(status.max_concurrent - status.in_flight - status.in_flight_preflight - jobs, 0)


def _check_poll_sizes(body: PollRequest) -> None:
    """400 for a poll too big to handle: scope lists and free-text fields are capped."""
    for name, scopes in (
        ("capabilities.scopes", body.capabilities.scopes),
        ("degraded_scopes", body.degraded_scopes),
    ):
        if len(scopes) > MAX_POLL_SCOPES:
            raise Validation(f"{name}: at most {MAX_POLL_SCOPES} scopes per poll")
    texts: list[tuple[str, str | None]] = [
        ("agent_version", body.agent_version),
        ("agent_build", body.agent_build),
        ("agent_id", body.agent_id),
    ]
    if body.status is not None:
        for job in body.status.active_jobs:
            texts += [
                ("active_jobs.request_id", job.request_id),
                ("active_jobs.operation", job.operation),
            ]
    for name, text in texts:
        if text is not None and len(text) > MAX_POLL_TEXT_CHARS:
            raise Validation(f"{name}: at most {MAX_POLL_TEXT_CHARS} characters")
