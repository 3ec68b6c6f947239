"""`ExplainJobRepository`: the same behaviour from the fake, SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import pytest

from application.server.ports.work import WorkRepository
from application.server.ports.work.explain_jobs import (
    DryRunJobRecord,
    DryRunOutcome,
    DryRunStatus,
    PreflightJobRecord,
    PreflightOutcome,
    PreflightStatus,
)
from domain.server.request_lifecycle import TERMINAL_STATUSES, RequestStatus
from tests.contracts.work_store.records import (
    BILLING,
    PROD,
    STAGING,
    a_dry_run,
    a_preflight,
    add_request,
    at,
)

_D = DryRunStatus
_P = PreflightStatus


def ids(jobs: list[DryRunJobRecord] | list[PreflightJobRecord]) -> list[str]:
    return [job.id for job in jobs]


def dry_run_statuses(work: WorkRepository, *job_ids: str) -> list[DryRunStatus | None]:
    return [getattr(work.get_dry_run_job(job_id), "status", None) for job_id in job_ids]


def preflight_statuses(work: WorkRepository, *job_ids: str) -> list[PreflightStatus | None]:
    return [getattr(work.get_preflight_job(job_id), "status", None) for job_id in job_ids]


# --- dry-run jobs -------------------------------------------------------------------------------


@pytest.fixture
def request_id(work: WorkRepository) -> str:
    return add_request(work, "r1").id


def test_a_dry_run_job_reads_back_field_for_field(work: WorkRepository, request_id: str) -> None:
    pending = a_dry_run("d1", request_id, sql="SELECT * FROM t")
    finished = a_dry_run(
        "d2",
        request_id,
        scope=STAGING,
        created=1,
        status=_D.COMPLETED,
        claimed_by="sub-1",
        claimed_at=at(2),
        claim_token="claim-1",
        result_json='{"plan":[]}',
        error_message="warning",
        completed_at=at(3),
    )
    work.insert_dry_run_job(pending)
    work.insert_dry_run_job(finished)

    assert work.get_dry_run_job("d1") == pending
    assert work.get_dry_run_job("d2") == finished
    assert work.get_dry_run_job("missing") is None


def test_a_requests_dry_run_jobs_oldest_first(work: WorkRepository, request_id: str) -> None:
    add_request(work, "r2")
    for job_id, created in (("d3", 3), ("d1", 1), ("d2b", 2), ("d2a", 2)):
        work.insert_dry_run_job(a_dry_run(job_id, request_id, created=created))
    work.insert_dry_run_job(a_dry_run("other", "r2"))

    assert ids(work.dry_run_jobs_for_request(request_id)) == ["d1", "d2a", "d2b", "d3"]
    assert work.dry_run_jobs_for_request("missing") == []


def test_pending_dry_runs_in_the_scopes_oldest_first(work: WorkRepository, request_id: str) -> None:
    jobs = [
        a_dry_run("later", request_id, created=3),
        a_dry_run("sooner", request_id, created=1),
        a_dry_run("tie-b", request_id, created=2),
        a_dry_run("tie-a", request_id, created=2),
        a_dry_run("staging", request_id, scope=STAGING, created=0),
        a_dry_run("billing", request_id, scope=BILLING, created=0),
        a_dry_run("claimed", request_id, created=0, status=_D.CLAIMED),
        a_dry_run("failed", request_id, created=0, status=_D.FAILED),
    ]
    for job in jobs:
        work.insert_dry_run_job(job)

    found = work.pending_dry_run_jobs([PROD, STAGING], limit=10)

    assert ids(found) == ["staging", "sooner", "tie-a", "tie-b", "later"]
    assert ids(work.pending_dry_run_jobs([PROD], limit=2)) == ["sooner", "tie-a"]
    assert work.pending_dry_run_jobs([], limit=10) == []
    assert work.pending_dry_run_jobs([PROD], limit=0) == []


def test_a_finished_requests_dry_runs_are_never_offered(work: WorkRepository) -> None:
    statuses = sorted(RequestStatus)
    for n, status in enumerate(statuses):
        add_request(work, f"r-{status.value}", status=status)
        work.insert_dry_run_job(a_dry_run(f"d-{status.value}", f"r-{status.value}", created=n))

    offered = ids(work.pending_dry_run_jobs([PROD], limit=100))

    assert offered == [f"d-{s.value}" for s in statuses if s not in TERMINAL_STATUSES]


def test_a_dry_run_is_claimed_once(work: WorkRepository, request_id: str) -> None:
    job = a_dry_run("d1", request_id)
    work.insert_dry_run_job(job)

    assert work.claim_dry_run_job("d1", "sub-1", "claim-1", at(5))
    assert not work.claim_dry_run_job("d1", "sub-2", "claim-2", at(6))
    assert not work.claim_dry_run_job("missing", "sub-1", "claim-1", at(5))

    assert work.get_dry_run_job("d1") == replace(
        job, status=_D.CLAIMED, claimed_by="sub-1", claimed_at=at(5), claim_token="claim-1"
    )


def test_only_the_claims_holder_finishes_a_dry_run(work: WorkRepository, request_id: str) -> None:
    work.insert_dry_run_job(a_dry_run("d1", request_id))
    work.insert_dry_run_job(a_dry_run("unclaimed", request_id))
    work.claim_dry_run_job("d1", "sub-1", "claim-1", at(5))
    claimed = work.get_dry_run_job("d1")
    outcome = DryRunOutcome(_D.COMPLETED, at(9), result_json='{"cost":1}', error_message=None)

    assert not work.finish_dry_run_job("d1", "sub-2", "claim-1", outcome)
    assert not work.finish_dry_run_job("d1", "sub-1", "claim-2", outcome)
    assert not work.finish_dry_run_job("unclaimed", "sub-1", "claim-1", outcome)
    assert work.finish_dry_run_job("d1", "sub-1", "claim-1", outcome)
    assert not work.finish_dry_run_job("d1", "sub-1", "claim-1", outcome)

    assert claimed is not None
    assert work.get_dry_run_job("d1") == replace(
        claimed, status=_D.COMPLETED, result_json='{"cost":1}', completed_at=at(9)
    )


def test_a_failed_dry_run_keeps_its_error(work: WorkRepository, request_id: str) -> None:
    work.insert_dry_run_job(a_dry_run("d1", request_id))
    work.claim_dry_run_job("d1", "sub-1", "claim-1", at(5))

    assert work.finish_dry_run_job(
        "d1", "sub-1", "claim-1", DryRunOutcome(_D.FAILED, at(9), error_message="no such table")
    )

    failed = work.get_dry_run_job("d1")
    assert failed is not None
    assert (failed.status, failed.result_json, failed.error_message) == (
        _D.FAILED,
        None,
        "no such table",
    )


def test_stale_dry_run_claims_go_back_to_pending(work: WorkRepository, request_id: str) -> None:
    for job_id, claimed_at in (("stale", 1), ("at-cut-off", 10), ("fresh", 20)):
        work.insert_dry_run_job(a_dry_run(job_id, request_id))
        work.claim_dry_run_job(job_id, "sub-1", f"claim-{job_id}", at(claimed_at))
    work.insert_dry_run_job(a_dry_run("pending", request_id))

    assert work.release_stale_dry_run_claims(at(10)) == 1

    assert work.get_dry_run_job("stale") == a_dry_run("stale", request_id)
    assert dry_run_statuses(work, "at-cut-off", "fresh", "pending") == [
        _D.CLAIMED,
        _D.CLAIMED,
        _D.PENDING,
    ]
    assert work.release_stale_dry_run_claims(at(10)) == 0


def test_pending_dry_runs_of_finished_requests_fail(work: WorkRepository) -> None:
    add_request(work, "done", status=RequestStatus.EXECUTED)
    add_request(work, "cancelled", status=RequestStatus.CANCELLED)
    add_request(work, "live", status=RequestStatus.PENDING)
    work.insert_dry_run_job(a_dry_run("d-done", "done"))
    work.insert_dry_run_job(a_dry_run("d-cancelled", "cancelled"))
    work.insert_dry_run_job(a_dry_run("d-live", "live"))
    work.insert_dry_run_job(a_dry_run("d-claimed", "done"))
    work.claim_dry_run_job("d-claimed", "sub-1", "claim-1", at(1))

    finished = {RequestStatus.EXECUTED, RequestStatus.CANCELLED}
    assert work.fail_orphaned_dry_runs(finished, "request finished", at(50)) == 2

    assert work.get_dry_run_job("d-done") == a_dry_run(
        "d-done",
        "done",
        status=_D.FAILED,
        error_message="request finished",
        completed_at=at(50),
    )
    assert dry_run_statuses(work, "d-cancelled", "d-live", "d-claimed") == [
        _D.FAILED,
        _D.PENDING,
        _D.CLAIMED,
    ]
    assert work.fail_orphaned_dry_runs(finished, "request finished", at(51)) == 0
    assert work.fail_orphaned_dry_runs((), "request finished", at(51)) == 0


# --- preflight jobs ---------------------------------------------------------------------------


def test_a_preflight_job_reads_back_field_for_field(work: WorkRepository) -> None:
    pending = a_preflight("p1", requester="bob", sql="SELECT 2")
    finished = a_preflight(
        "p2",
        scope=STAGING,
        created=1,
        expires=30,
        status=_P.ERROR,
        claimed_by="sub-1",
        claimed_at=at(2),
        claim_token="claim-1",
        result_json='{"plan":[]}',
        error_message="timeout",
        completed_at=at(3),
    )
    work.insert_preflight_job(pending)
    work.insert_preflight_job(finished)

    assert work.get_preflight_job("p1") == pending
    assert work.get_preflight_job("p2") == finished
    assert work.get_preflight_job("missing") is None


def test_a_pending_preflight_is_one_unexpired_in_the_scopes(work: WorkRepository) -> None:
    work.insert_preflight_job(a_preflight("p1", expires=30))
    work.insert_preflight_job(a_preflight("claimed", expires=300, status=_P.CLAIMED))

    assert work.has_pending_preflight([PROD], at(29))
    assert work.has_pending_preflight([STAGING, PROD], at(29))
    assert not work.has_pending_preflight([PROD], at(30))  # expires at that instant
    assert not work.has_pending_preflight([STAGING], at(29))
    assert not work.has_pending_preflight([], at(29))


def test_a_users_outstanding_preflights_are_the_unexpired_pending_and_claimed(
    work: WorkRepository,
) -> None:
    work.insert_preflight_job(a_preflight("p1", requester="bob", expires=30))
    work.insert_preflight_job(a_preflight("p2", requester="bob", expires=60, status=_P.CLAIMED))
    work.insert_preflight_job(a_preflight("done", requester="bob", status=_P.COMPLETED))
    work.insert_preflight_job(a_preflight("other", requester="carol"))

    assert work.outstanding_preflight_jobs("bob", at(29)) == 2
    assert work.outstanding_preflight_jobs("bob", at(30)) == 1  # p1 expires at that instant
    assert work.outstanding_preflight_jobs("carol", at(29)) == 1
    assert work.outstanding_preflight_jobs("nobody", at(29)) == 0


def test_preflights_are_claimed_oldest_first_under_one_claim(work: WorkRepository) -> None:
    jobs = [
        a_preflight("later", created=3),
        a_preflight("sooner", created=1),
        a_preflight("tie-b", created=2),
        a_preflight("tie-a", created=2),
        a_preflight("staging", scope=STAGING, created=0),
        a_preflight("expired", created=0, expires=10),
        a_preflight("claimed", created=0, status=_P.CLAIMED),
    ]
    for job in jobs:
        work.insert_preflight_job(job)

    claimed = work.claim_preflight_jobs([PROD], "sub-1", "claim-1", at(10), limit=3)

    assert claimed == [
        replace(
            work_job,
            status=_P.CLAIMED,
            claimed_by="sub-1",
            claimed_at=at(10),
            claim_token="claim-1",
        )
        for work_job in (jobs[1], jobs[3], jobs[2])
    ]
    assert claimed == [work.get_preflight_job(job.id) for job in claimed]
    again = work.claim_preflight_jobs([PROD, STAGING], "sub-2", "claim-2", at(10), limit=10)
    assert ids(again) == ["staging", "later"]
    assert work.claim_preflight_jobs([PROD, STAGING], "sub-2", "claim-3", at(10), limit=10) == []


def test_no_scopes_or_no_room_claim_no_preflight(work: WorkRepository) -> None:
    work.insert_preflight_job(a_preflight("p1"))

    assert work.claim_preflight_jobs([], "sub-1", "claim-1", at(1), limit=10) == []
    assert work.claim_preflight_jobs([PROD], "sub-1", "claim-1", at(1), limit=0) == []
    assert work.has_pending_preflight([PROD], at(1))


def test_only_the_claims_holder_finishes_a_preflight_before_it_expires(
    work: WorkRepository,
) -> None:
    work.insert_preflight_job(a_preflight("p1", expires=30))
    work.insert_preflight_job(a_preflight("p2", expires=30))
    work.claim_preflight_jobs([PROD], "sub-1", "claim-1", at(1), limit=10)
    claimed = work.get_preflight_job("p1")

    def finish(job_id: str, agent: str, token: str, when: float) -> bool:
        outcome = PreflightOutcome(_P.COMPLETED, at(when), result_json='{"cost":2}')
        return work.finish_preflight_job(job_id, agent, token, outcome)

    assert not finish("p1", "sub-2", "claim-1", 5)
    assert not finish("p1", "sub-1", "claim-2", 5)
    assert not finish("p2", "sub-1", "claim-1", 30)  # expired at that instant
    assert finish("p1", "sub-1", "claim-1", 29)
    assert not finish("p1", "sub-1", "claim-1", 29)
    assert not finish("missing", "sub-1", "claim-1", 5)

    assert claimed is not None
    assert work.get_preflight_job("p1") == replace(
        claimed, status=_P.COMPLETED, result_json='{"cost":2}', completed_at=at(29)
    )


def test_pending_and_claimed_preflights_expire(work: WorkRepository) -> None:
    work.insert_preflight_job(a_preflight("pending", created=1, expires=10))
    work.insert_preflight_job(a_preflight("claimed", created=0, expires=5))
    work.claim_preflight_jobs([PROD], "sub-1", "claim-1", at(1), limit=1)  # the oldest
    work.insert_preflight_job(a_preflight("completed", expires=5, status=_P.COMPLETED))
    work.insert_preflight_job(a_preflight("future", expires=11))

    assert work.expire_preflight_jobs(at(10)) == 2

    assert preflight_statuses(work, "pending", "claimed", "completed", "future") == [
        _P.EXPIRED,
        _P.EXPIRED,
        _P.COMPLETED,
        _P.PENDING,
    ]
    assert work.expire_preflight_jobs(at(10)) == 0
