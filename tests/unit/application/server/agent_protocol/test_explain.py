"""EXPLAIN jobs: dry-run claims and results, preflight results."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.server.ports.work.explain_jobs import (
    DryRunStatus,
    PreflightJobRecord,
    PreflightStatus,
)
from domain.server.errors import Conflict, Gone, PayloadTooLarge, Validation
from domain.shared.jobs import DryRunResult, ExplainOutcome, PreflightResult
from tests.unit.application.server.test_requests_and_claims import AGENT, ALICE, T0, ServerHarness


def test_dry_run_claim_and_result(server: ServerHarness) -> None:
    request_id = server.create(environment="staging")
    reply = server.poll(scopes=(("app", "staging"),))
    (job,) = reply.dry_run_jobs
    with pytest.raises(Validation, match="dry-run job not found"):
        server.agents.claim_dry_run_job.claim(AGENT, "missing")
    token = server.agents.claim_dry_run_job.claim(AGENT, job.id)
    with pytest.raises(Conflict, match="already_claimed"):
        server.agents.claim_dry_run_job.claim(AGENT, job.id)
    with pytest.raises(Conflict):
        server.agents.submit_dry_run_result.submit(
            AGENT, job.id, DryRunResult("wrong", ExplainOutcome(plan={}))
        )
    server.agents.submit_dry_run_result.submit(
        AGENT, job.id, DryRunResult(token, ExplainOutcome(plan=[{"Plan": {"Node": "x"}}]))
    )
    details = server.requests.get_request.get(ALICE, request_id)
    assert [j.status for j in details.dry_runs] == [DryRunStatus.COMPLETED]


def test_preflight_result_is_taken_once_with_its_claim_token(server: ServerHarness) -> None:
    with server.store.write() as session:
        for n in range(3):
            session.work.insert_preflight_job(
                PreflightJobRecord(
                    id=f"pf-{n}",
                    requester="alice",
                    database="app",
                    environment="production",
                    sql=f"SELECT {n}",
                    expires_at=T0 + timedelta(seconds=10),
                    created_at=T0 + timedelta(microseconds=n),
                )
            )
    server.create()  # one dispatched job takes one of the two slots
    reply = server.poll()
    token = reply.preflight_jobs[0].claim_token
    server.agents.submit_preflight_result.submit(
        AGENT, PreflightResult("pf-0", token, ExplainOutcome(plan=[{"Plan": {}}]))
    )
    with server.store.read() as session:
        job = session.work.get_preflight_job("pf-0")
    assert job is not None and job.status is PreflightStatus.COMPLETED
    with pytest.raises(Gone):
        server.agents.submit_preflight_result.submit(
            AGENT, PreflightResult("pf-0", token, ExplainOutcome(error="again"))
        )
    with pytest.raises(Validation, match="exactly one"):
        server.agents.submit_preflight_result.submit(
            AGENT, PreflightResult("pf-1", token, ExplainOutcome())
        )
    with pytest.raises(PayloadTooLarge):
        server.agents.submit_preflight_result.submit(
            AGENT, PreflightResult("pf-1", token, ExplainOutcome(error="e" * 4097))
        )
