"""The request state machine (docs/server.md §1.1, §1.2), as one pure function.

Every status change in the server goes through `transition`, and the store turns
`allowed_from(trigger)` into its conditional `UPDATE ... WHERE status IN (...)`, so the
table below is the single place that says which moves exist. Anything the table does not
list raises `InvalidTransition`, which the API returns as 409.

Where we differ from dbward 0.2 (docs/server.md §7.1, docs/server.md §11):

* Late completion is real: `execution_lost + Complete` moves to `executed` / `failed`
  (dbward 0.2's table allowed it but its repository refused the update).
* A dispatch timeout keeps provenance: the request goes back to the status it had before
  it was dispatched (`dispatch_timeout_target`), not always to `approved`. Because an
  auto-approved or break-glass request can therefore rest in those statuses, the approved
  TTL applies to them too (`Expire` is accepted from them), so a reverted request still
  expires (§11.3).
* `execution_lost` expires too: nothing else would ever end a lost request nobody resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, StrEnum
from types import MappingProxyType

from domain.server.errors import Conflict


class RequestStatus(StrEnum):
    """The twelve statuses; the values are the strings stored and returned by the API."""

    PENDING = "pending"
    APPROVED = "approved"
    AUTO_APPROVED = "auto_approved"
    BREAK_GLASS = "break_glass"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    EXECUTED = "executed"
    FAILED = "failed"
    EXECUTION_LOST = "execution_lost"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: dbward 0.2's database trigger still admits this legacy spelling of `executed`.
LEGACY_STATUS_ALIASES: Mapping[str, RequestStatus] = MappingProxyType(
    {"completed": RequestStatus.EXECUTED}
)


def parse_status(raw: str) -> RequestStatus:
    """Read a stored status, mapping the legacy `completed` to `executed`."""
    alias = LEGACY_STATUS_ALIASES.get(raw)
    if alias is not None:
        return alias
    try:
        return RequestStatus(raw)
    except ValueError:
        raise ValueError(f"unknown request status: {raw!r}") from None


class Trigger(Enum):
    """What happened to a request. The value is the label used in error messages.

    The labels follow dbward 0.2's `Debug` rendering, so a 409 reads the same as a
    dbward 0.2 server's (`invalid transition: executed + Cancel`).
    """

    CREATE_EMERGENCY = "Create { emergency: true }"
    CREATE_AUTO_APPROVED = "Create { emergency: false, needs_approval: false }"
    CREATE_NEEDS_APPROVAL = "Create { emergency: false, needs_approval: true }"
    APPROVE_STEP = "ApproveStep"
    APPROVE_FINAL = "ApproveFinal"
    REJECT = "Reject"
    EXPIRE = "Expire"
    CANCEL = "Cancel"
    DISPATCH = "Dispatch"
    DISPATCH_TIMEOUT = "DispatchTimeout"
    CLAIM = "Claim"
    COMPLETE_SUCCESS = "Complete { success: true }"
    COMPLETE_FAILURE = "Complete { success: false }"
    LEASE_EXPIRED = "LeaseExpired"

    @classmethod
    def create(cls, *, emergency: bool, needs_approval: bool) -> Trigger:
        """The creation trigger for a request's decision; emergency wins over the workflow."""
        if emergency:
            return cls.CREATE_EMERGENCY
        return cls.CREATE_NEEDS_APPROVAL if needs_approval else cls.CREATE_AUTO_APPROVED

    @classmethod
    def complete(cls, *, success: bool) -> Trigger:
        """The completion trigger for an agent's result."""
        return cls.COMPLETE_SUCCESS if success else cls.COMPLETE_FAILURE

    @property
    def is_create(self) -> bool:
        return self in _CREATE_TRIGGERS

    @property
    def is_complete(self) -> bool:
        return self in (Trigger.COMPLETE_SUCCESS, Trigger.COMPLETE_FAILURE)

    def __str__(self) -> str:
        return self.value


_CREATE_TRIGGERS = frozenset(
    {Trigger.CREATE_EMERGENCY, Trigger.CREATE_AUTO_APPROVED, Trigger.CREATE_NEEDS_APPROVAL}
)


class InvalidTransition(Conflict):
    """A (status, trigger) pair the table does not list; the API answers 409."""

    def __init__(self, current: RequestStatus | None, trigger: Trigger) -> None:
        shown = current.value if current is not None else "none"
        super().__init__(f"invalid transition: {shown} + {trigger}", code="invalid_transition")
        self.current = current
        self.trigger = trigger


_S = RequestStatus
_T = Trigger

#: `is_terminal()`: nothing more happens to these, except an explicit re-dispatch of
#: `executed` / `failed`. `execution_lost` is deliberately not terminal.
TERMINAL_STATUSES: frozenset[RequestStatus] = frozenset(
    {_S.EXECUTED, _S.FAILED, _S.REJECTED, _S.CANCELLED, _S.EXPIRED}
)

#: Where Cancel is accepted. `running` is included: the agent learns it on its next heartbeat.
CANCELLABLE_STATUSES: frozenset[RequestStatus] = frozenset(
    {
        _S.PENDING,
        _S.APPROVED,
        _S.AUTO_APPROVED,
        _S.BREAK_GLASS,
        _S.DISPATCHED,
        _S.RUNNING,
        _S.EXECUTION_LOST,
    }
)

#: Where Dispatch (resume) is accepted by the state machine. Execution policy (max
#: executions, the execution window, `retry_on_failure`) is checked by the use case.
DISPATCHABLE_STATUSES: frozenset[RequestStatus] = frozenset(
    {_S.APPROVED, _S.AUTO_APPROVED, _S.BREAK_GLASS, _S.EXECUTED, _S.FAILED, _S.EXECUTION_LOST}
)

#: Statuses the ttl_expiry job may expire (docs/server.md §1.6). dbward 0.2 expires only
#: pending and approved; we add auto_approved and break_glass, where a timed-out dispatch
#: now returns, and execution_lost, which waits for a resume like an approved request and
#: gets the approved TTL from the moment its lease was lost.
EXPIRABLE_STATUSES: frozenset[RequestStatus] = frozenset(
    {_S.PENDING, _S.APPROVED, _S.AUTO_APPROVED, _S.BREAK_GLASS, _S.EXECUTION_LOST}
)

#: Dispatching from these re-runs a request that ran before: the execution policy's
#: `execution_window_secs` bounds it (docs/server.md §1.4).
REDISPATCH_STATUSES: frozenset[RequestStatus] = frozenset(
    {_S.EXECUTED, _S.FAILED, _S.EXECUTION_LOST}
)

#: Statuses whose execution the lease_reclaim job may declare lost.
LEASE_RECLAIMABLE_STATUSES: frozenset[RequestStatus] = frozenset({_S.RUNNING})

#: Statuses that accept an agent's result. `cancelled` keeps its status (the result is
#: stored, not published); `execution_lost` is the late completion.
COMPLETABLE_STATUSES: frozenset[RequestStatus] = frozenset(
    {_S.RUNNING, _S.EXECUTION_LOST, _S.CANCELLED}
)

#: Statuses a dispatch timeout may return to; anything else falls back to `approved`.
_DISPATCH_TIMEOUT_TARGETS = DISPATCHABLE_STATUSES

_CREATED: Mapping[Trigger, RequestStatus] = MappingProxyType(
    {
        _T.CREATE_EMERGENCY: _S.BREAK_GLASS,
        _T.CREATE_AUTO_APPROVED: _S.AUTO_APPROVED,
        _T.CREATE_NEEDS_APPROVAL: _S.PENDING,
    }
)


def _build_table() -> Mapping[tuple[RequestStatus, Trigger], RequestStatus]:
    table: dict[tuple[RequestStatus, Trigger], RequestStatus] = {
        (_S.PENDING, _T.APPROVE_STEP): _S.PENDING,
        (_S.PENDING, _T.APPROVE_FINAL): _S.APPROVED,
        (_S.PENDING, _T.REJECT): _S.REJECTED,
        (_S.DISPATCHED, _T.DISPATCH_TIMEOUT): _S.APPROVED,
        (_S.DISPATCHED, _T.CLAIM): _S.RUNNING,
        (_S.RUNNING, _T.COMPLETE_SUCCESS): _S.EXECUTED,
        (_S.RUNNING, _T.COMPLETE_FAILURE): _S.FAILED,
        (_S.RUNNING, _T.LEASE_EXPIRED): _S.EXECUTION_LOST,
        (_S.CANCELLED, _T.COMPLETE_SUCCESS): _S.CANCELLED,
        (_S.CANCELLED, _T.COMPLETE_FAILURE): _S.CANCELLED,
        (_S.EXECUTION_LOST, _T.COMPLETE_SUCCESS): _S.EXECUTED,
        (_S.EXECUTION_LOST, _T.COMPLETE_FAILURE): _S.FAILED,
    }
    for status in EXPIRABLE_STATUSES:
        table[(status, _T.EXPIRE)] = _S.EXPIRED
    for status in CANCELLABLE_STATUSES:
        table[(status, _T.CANCEL)] = _S.CANCELLED
    for status in DISPATCHABLE_STATUSES:
        table[(status, _T.DISPATCH)] = _S.DISPATCHED
    return MappingProxyType(table)


#: The whole table (creation aside): (from, trigger) -> to.
TRANSITIONS: Mapping[tuple[RequestStatus, Trigger], RequestStatus] = _build_table()


def transition(
    current: RequestStatus | None,
    trigger: Trigger,
    *,
    pre_dispatch_status: RequestStatus | None = None,
) -> RequestStatus:
    """The status after `trigger`, or `InvalidTransition`.

    `current` is None only for creation. `pre_dispatch_status` matters only for
    `DispatchTimeout`: pass the status the request had before it was dispatched to get it
    back; without it the result is dbward 0.2's `approved`.
    """
    if current is None:
        created = _CREATED.get(trigger)
        if created is None:
            raise InvalidTransition(current, trigger)
        return created
    target = TRANSITIONS.get((current, trigger))
    if target is None:
        raise InvalidTransition(current, trigger)
    if trigger is _T.DISPATCH_TIMEOUT:
        return dispatch_timeout_target(pre_dispatch_status)
    return target


def dispatch_timeout_target(pre_dispatch_status: RequestStatus | None) -> RequestStatus:
    """Where an unclaimed dispatch returns: the status it left, when that can be resumed.

    An auto-approved or break-glass request goes back to its own status (so the audit trail
    and the UI still say why it ran without an approval), a re-dispatched executed/failed/
    lost request goes back to that outcome, and anything unknown to `approved`, as in the
    reference.
    """
    if pre_dispatch_status is not None and pre_dispatch_status in _DISPATCH_TIMEOUT_TARGETS:
        return pre_dispatch_status
    return _S.APPROVED


def allowed_from(trigger: Trigger) -> frozenset[RequestStatus]:
    """Every status `trigger` may leave: the store's `WHERE status IN (...)` set."""
    return frozenset(status for status, trig in TRANSITIONS if trig is trigger)


def can_transition(current: RequestStatus, trigger: Trigger) -> bool:
    return (current, trigger) in TRANSITIONS


def is_terminal(status: RequestStatus) -> bool:
    return status in TERMINAL_STATUSES


def is_cancellable(status: RequestStatus) -> bool:
    return status in CANCELLABLE_STATUSES


def is_dispatchable(status: RequestStatus) -> bool:
    """Whether resume may dispatch from here (policy checks come on top)."""
    return status in DISPATCHABLE_STATUSES


def is_expirable(status: RequestStatus) -> bool:
    return status in EXPIRABLE_STATUSES


def publishes_completion(current: RequestStatus) -> bool:
    """Whether a result arriving in `current` is announced (result slot, webhook).

    A cancelled request stores the result for the record but tells nobody it finished.
    """
    return current in COMPLETABLE_STATUSES and current is not _S.CANCELLED
