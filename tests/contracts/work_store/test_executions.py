"""`ExecutionRepository`: the same behaviour from the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from application.server.ports.work import WorkRepository
from application.server.ports.work.executions import (
    LEASE_EXPIRED_MESSAGE,
    ExecutionAlreadyClaimed,
    ExecutionCompletion,
    ExecutionRecord,
    ExecutionStatus,
)
from tests.contracts.work_store.records import a_result, add_request, an_execution, at

_E = ExecutionStatus


@pytest.fixture
def request_id(work: WorkRepository) -> str:
    return add_request(work, "r1").id


def ids(records: list[ExecutionRecord]) -> list[str]:
    return [record.id for record in records]


def status_of(work: WorkRepository, execution_id: str) -> ExecutionStatus:
    execution = work.get_execution(execution_id)
    assert execution is not None
    return execution.status


# --- insert and lookups ---------------------------------------------------------------------


def test_an_execution_reads_back_field_for_field(work: WorkRepository, request_id: str) -> None:
    finished = an_execution(
        "e1",
        request_id,
        status=_E.FAILED,
        created=1,
        lease_expires=61,
        lease_secs=45,
        finished_at=at(30),
        error_message="boom",
    )
    claimed = an_execution("e2", request_id, created=2)
    work.insert_execution(finished)
    work.insert_execution(claimed)

    assert work.get_execution("e1") == finished
    assert work.get_execution("e2") == claimed
    assert work.get_execution("missing") is None


def test_a_second_claimed_execution_of_a_request_is_refused(
    work: WorkRepository, request_id: str
) -> None:
    work.insert_execution(an_execution("e1", request_id))

    with pytest.raises(ExecutionAlreadyClaimed):
        work.insert_execution(an_execution("e2", request_id, created=1))

    assert work.get_execution("e2") is None
    # The lost race spoils nothing: the same transaction keeps working.
    add_request(work, "r2")
    work.insert_execution(an_execution("e3", "r2"))
    assert work.get_execution("e3") is not None


def test_finished_executions_do_not_block_a_new_claim(
    work: WorkRepository, request_id: str
) -> None:
    work.insert_execution(an_execution("e1", request_id, status=_E.FAILED))
    work.insert_execution(an_execution("e2", request_id, status=_E.COMPLETED, created=1))

    work.insert_execution(an_execution("e3", request_id, created=2))

    assert ids(work.list_executions(request_id, limit=10)) == ["e3", "e2", "e1"]


def test_executions_of_a_request_newest_first(work: WorkRepository, request_id: str) -> None:
    add_request(work, "r2")
    work.insert_execution(an_execution("e1", request_id, status=_E.FAILED, created=1))
    work.insert_execution(an_execution("e3", request_id, status=_E.FAILED, created=3))
    work.insert_execution(an_execution("e2a", request_id, status=_E.FAILED, created=2))
    work.insert_execution(an_execution("e2b", request_id, status=_E.FAILED, created=2))
    work.insert_execution(an_execution("other", "r2", created=9))

    assert ids(work.list_executions(request_id, limit=10)) == ["e3", "e2b", "e2a", "e1"]
    assert ids(work.list_executions(request_id, limit=2)) == ["e3", "e2b"]
    assert work.list_executions("missing", limit=10) == []


def test_executions_are_counted_per_request_whatever_their_status(
    work: WorkRepository, request_id: str
) -> None:
    add_request(work, "r2")
    assert work.count_executions(request_id) == 0
    work.insert_execution(an_execution("e1", request_id, status=_E.FAILED, created=1))
    work.insert_execution(an_execution("e2", request_id, status=_E.COMPLETED, created=2))
    work.insert_execution(an_execution("e3", request_id, created=3))
    work.insert_execution(an_execution("other", "r2", created=4))

    assert work.count_executions(request_id) == 3
    assert work.count_executions("r2") == 1
    assert work.count_executions("missing") == 0


def test_a_newer_execution_is_one_of_the_same_request_created_at_or_after(
    work: WorkRepository, request_id: str
) -> None:
    add_request(work, "r2")
    first = an_execution("e1", request_id, status=_E.FAILED, created=5)
    work.insert_execution(first)
    work.insert_execution(an_execution("other-request", "r2", created=9))
    assert not work.newer_execution_exists(first)

    work.insert_execution(an_execution("older", request_id, status=_E.FAILED, created=1))
    assert not work.newer_execution_exists(first)

    work.insert_execution(an_execution("same-time", request_id, created=5))
    assert work.newer_execution_exists(first)


# --- leases ---------------------------------------------------------------------------------


def test_only_a_claimed_execution_extends_its_lease(work: WorkRepository, request_id: str) -> None:
    for n, status in enumerate(_E):
        work.insert_execution(an_execution(status.value, request_id, status=status, created=n))

    extended = {status: work.extend_lease(status.value, at(500)) for status in _E}

    assert extended == {_E.CLAIMED: True, _E.RUNNING: False, _E.COMPLETED: False, _E.FAILED: False}
    claimed = work.get_execution(_E.CLAIMED.value)
    running = work.get_execution(_E.RUNNING.value)
    assert claimed is not None and claimed.lease_expires_at == at(500)
    assert running is not None and running.lease_expires_at == at(60)
    assert not work.extend_lease("missing", at(500))


def test_expired_leases_of_live_executions_soonest_first(
    work: WorkRepository, request_id: str
) -> None:
    for name in ("r2", "r3", "r4", "r5"):
        add_request(work, name)
    work.insert_execution(an_execution("later", request_id, lease_expires=20))
    work.insert_execution(an_execution("sooner", "r2", status=_E.RUNNING, lease_expires=10))
    work.insert_execution(an_execution("at-now", "r3", lease_expires=30))
    work.insert_execution(an_execution("future", "r4", lease_expires=40))
    work.insert_execution(an_execution("done", "r5", status=_E.COMPLETED, lease_expires=0))

    assert ids(work.expired_leases(at(30), limit=10)) == ["sooner", "later"]
    assert ids(work.expired_leases(at(30), limit=1)) == ["sooner"]


def test_an_expired_lease_fails_the_execution_once(work: WorkRepository, request_id: str) -> None:
    execution = an_execution("e1", request_id, lease_expires=30)
    work.insert_execution(execution)

    assert not work.fail_expired_lease("e1", at(30))  # not past its lease yet
    assert work.fail_expired_lease("e1", at(31))
    assert not work.fail_expired_lease("e1", at(32))

    assert work.get_execution("e1") == replace(
        execution, status=_E.FAILED, finished_at=at(31), error_message=LEASE_EXPIRED_MESSAGE
    )
    assert not work.fail_expired_lease("missing", at(31))


def test_a_running_execution_past_its_lease_fails_too(
    work: WorkRepository, request_id: str
) -> None:
    work.insert_execution(an_execution("e1", request_id, status=_E.RUNNING, lease_expires=30))
    add_request(work, "r2")
    work.insert_execution(an_execution("e2", "r2", status=_E.COMPLETED, lease_expires=30))

    assert work.fail_expired_lease("e1", at(31))
    assert not work.fail_expired_lease("e2", at(31))
    assert status_of(work, "e2") is _E.COMPLETED


# --- completion ----------------------------------------------------------------------------


def done(at_secs: float, *, late: bool = False, error: str | None = None) -> ExecutionCompletion:
    status = _E.FAILED if error else _E.COMPLETED
    return ExecutionCompletion(status, at(at_secs), error_message=error, late=late)


def test_a_live_execution_completes_once(work: WorkRepository, request_id: str) -> None:
    execution = an_execution("e1", request_id)
    work.insert_execution(execution)

    assert work.complete_execution("e1", done(10, error="syntax error"))
    assert not work.complete_execution("e1", done(11))

    assert work.get_execution("e1") == replace(
        execution, status=_E.FAILED, finished_at=at(10), error_message="syntax error"
    )


@pytest.mark.parametrize(
    ("status", "completes"),
    [(_E.CLAIMED, True), (_E.RUNNING, True), (_E.COMPLETED, False), (_E.FAILED, False)],
)
def test_an_on_time_result_completes_only_a_live_execution(
    work: WorkRepository, request_id: str, status: ExecutionStatus, completes: bool
) -> None:
    work.insert_execution(an_execution("e1", request_id, status=status))

    assert work.complete_execution("e1", done(10)) is completes
    assert not work.complete_execution("missing", done(10))


def test_a_late_result_completes_an_execution_lost_by_its_lease(
    work: WorkRepository, request_id: str
) -> None:
    work.insert_execution(an_execution("e1", request_id, lease_expires=30))
    assert work.fail_expired_lease("e1", at(31))

    assert work.complete_execution("e1", done(40, late=True))

    completed = work.get_execution("e1")
    assert completed is not None
    assert (completed.status, completed.finished_at, completed.error_message) == (
        _E.COMPLETED,
        at(40),
        None,
    )
    assert not work.complete_execution("e1", done(41, late=True))


def test_a_late_result_never_completes_another_failure_or_a_live_execution(
    work: WorkRepository, request_id: str
) -> None:
    add_request(work, "r2")
    work.insert_execution(
        an_execution("failed", request_id, status=_E.FAILED, error_message="agent said so")
    )
    work.insert_execution(an_execution("claimed", "r2"))

    assert not work.complete_execution("failed", done(40, late=True))
    assert not work.complete_execution("claimed", done(40, late=True))
    assert not work.complete_execution("missing", done(40, late=True))
    assert status_of(work, "failed") is _E.FAILED
    assert status_of(work, "claimed") is _E.CLAIMED


def test_a_late_result_loses_to_a_newer_execution_of_the_request(
    work: WorkRepository, request_id: str
) -> None:
    work.insert_execution(an_execution("e1", request_id, lease_expires=30))
    assert work.fail_expired_lease("e1", at(31))
    work.insert_execution(an_execution("e2", request_id, created=35))

    assert not work.complete_execution("e1", done(40, late=True))
    assert status_of(work, "e1") is _E.FAILED


# --- results ----------------------------------------------------------------------------------


def test_a_result_reads_back_field_for_field(work: WorkRepository, request_id: str) -> None:
    execution = an_execution("e1", request_id, status=_E.COMPLETED)
    work.insert_execution(execution)
    summary = a_result(
        execution,
        stored=5,
        storage_key="results/r1/e1",
        success=False,
        rows_affected=12,
        duration_ms=340,
        truncated=True,
        truncation_reason="max_rows",
        error_message="partial",
        storage_backend="filesystem",
        content_length=2048,
        checksum_sha256="cd" * 32,
        retention_days=7,
        status="expired",
        expires_at=at(86400),
    )
    work.insert_result(summary)

    assert work.result_for_execution("e1") == summary
    assert work.latest_result(request_id) == summary
    assert work.result_for_execution("missing") is None
    assert work.latest_result("missing") is None


def test_the_latest_result_is_the_last_stored(work: WorkRepository, request_id: str) -> None:
    for name, stored in (("e1", 1), ("e3", 3), ("e2", 2)):
        execution = an_execution(name, request_id, status=_E.COMPLETED, created=stored)
        work.insert_execution(execution)
        work.insert_result(a_result(execution, stored=stored))

    latest = work.latest_result(request_id)

    assert latest is not None and latest.execution_id == "e3"


def test_of_results_stored_at_once_the_larger_id_is_the_latest(
    work: WorkRepository, request_id: str
) -> None:
    for name in ("e1", "e2"):
        execution = an_execution(name, request_id, status=_E.COMPLETED)
        work.insert_execution(execution)
        work.insert_result(a_result(execution, stored=1))

    latest = work.latest_result(request_id)

    assert latest is not None and latest.id == "res-e2"


def test_executions_with_results_are_those_with_stored_content(
    work: WorkRepository, request_id: str
) -> None:
    for name, key in (("stored", "results/a"), ("stream-only", "")):
        execution = an_execution(name, request_id, status=_E.COMPLETED)
        work.insert_execution(execution)
        work.insert_result(a_result(execution, storage_key=key))
    work.insert_execution(an_execution("no-result", request_id, status=_E.FAILED))

    asked = ["stored", "stream-only", "no-result", "missing"]
    assert work.executions_with_results(asked) == {"stored"}
    assert work.executions_with_results([]) == set()
