"""The workflow a request was created under survives the trip through its row."""

from __future__ import annotations

from application.server.requests.snapshots import workflow_from_snapshot, workflow_snapshot
from domain.server.workflows import AutoApprove, AutoApproveMode, Workflow
from domain.shared.operations import Operation
from tests.unit.application.server.test_requests_and_claims import NEEDS_DBA


def test_workflow_snapshot_round_trips() -> None:
    workflow = Workflow(
        database="app",
        environment="*",
        operations=(Operation.EXECUTE_DML,),
        require_reason=True,
        pending_ttl_secs=60,
        statement_timeout_secs=90,
        auto_approve=AutoApprove(mode=AutoApproveMode.RISK_BASED, risk=None),
        steps=NEEDS_DBA.steps,
    )
    assert workflow_from_snapshot(workflow_snapshot(workflow)) == workflow
