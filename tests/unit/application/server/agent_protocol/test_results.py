"""Result intake: the request completed, the summary and content stored (or relayed),
late completion after a lost lease, and what the audit log keeps of an error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.store.schema import result_contents
from application.server.ports.work.executions import ExecutionStatus
from application.server.settings import AuditRedaction, AuditSettings
from domain.server.errors import Conflict, PayloadTooLarge
from domain.server.execution_policies import DeliveryMode, ResultPolicy
from domain.server.request_lifecycle import RequestStatus
from domain.shared.jobs import JobResult
from tests.unit.application.server.test_requests_and_claims import (
    AGENT,
    ALICE,
    ServerHarness,
    build_harness,
    default_settings,
    ok,
)


def test_result_completes_the_request_and_persists_a_summary(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    final = server.agents.submit_result.submit(AGENT, claim.execution_id, ok(rows_affected=None))
    assert final == (request_id, RequestStatus.EXECUTED)
    envelope = server.requests.get_result_content.get(ALICE, request_id)
    assert envelope.success and envelope.execution_id == claim.execution_id
    assert envelope.result_data == {
        "rows": [{"x": 1}],
        "truncated": False,
        "truncation_reason": None,
    }
    assert asyncio.run(server.requests.wait_for_result.wait(ALICE, request_id)) == envelope
    event = server.audit_rows("execution.completed")[0]
    assert json.loads(event["metadata_json"])["duration_ms"] == 7
    with pytest.raises(Conflict, match="execution is completed, cannot submit result"):
        server.agents.submit_result.submit(AGENT, claim.execution_id, ok())
    history = server.requests.list_executions.list(ALICE, request_id)
    assert [(e.execution.status, e.has_stored_result) for e in history] == [
        (ExecutionStatus.COMPLETED, True)
    ]


def test_a_small_result_kept_in_the_store_is_one_write_with_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = build_harness(tmp_path, small_results_in_store=True)
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        opened: list[str] = []
        write, read = harness.store.write, harness.store.read

        def counted(kind: str, open_session: Callable[[], Any]) -> Callable[[], Any]:
            def session() -> Any:
                opened.append(kind)
                return open_session()

            return session

        monkeypatch.setattr(harness.store, "write", counted("write", write))
        monkeypatch.setattr(harness.store, "read", counted("read", read))
        final = harness.agents.submit_result.submit(AGENT, claim.execution_id, ok())
        assert final == (request_id, RequestStatus.EXECUTED)
        assert opened == ["write"]
        monkeypatch.undo()
        envelope = harness.requests.get_result_content.get(ALICE, request_id)
        assert envelope.result_data["rows"] == [{"x": 1}]
        assert not [p for p in harness.results.root_dir.rglob("*") if p.is_file()]
        # A refused second attempt leaves no body behind: it rolled back with its records.
        with pytest.raises(Conflict):
            harness.agents.submit_result.submit(AGENT, claim.execution_id, ok())
        with harness.store.read() as session:
            kept = session.work.latest_result(request_id)
        assert kept is not None
        with harness.store.engine.connect() as conn:
            keys = conn.execute(select(result_contents.c.storage_key)).scalars().all()
        assert keys == [kept.storage_key]
    finally:
        harness.close()


def test_dml_result_carries_rows_affected_into_the_audit(server: ServerHarness) -> None:
    request_id = server.create(detail="UPDATE t SET a = 1 WHERE id = 1")
    server.poll()
    claim = server.claim(request_id)
    server.agents.submit_result.submit(
        AGENT,
        claim.execution_id,
        JobResult(success=True, result_data='{"rows_affected":3}', rows_affected=3),
    )
    metadata = json.loads(server.audit_rows("execution.completed")[0]["metadata_json"])
    assert metadata["rows_affected"] == 3
    assert server.requests.get_result_content.get(ALICE, request_id).rows_affected == 3


def test_a_dml_result_with_returned_rows_is_stored_with_them_and_its_truncation(
    server: ServerHarness,
) -> None:
    request_id = server.create(detail="UPDATE t SET a = 1 WHERE id > 0 RETURNING id")
    server.poll()
    claim = server.claim(request_id)
    data = (
        '{"rows_affected":3,"rows":[{"id":1}],"truncated":true,'
        '"truncation_reason":"row limit reached (1)","columns":[{"name":"id","type":"int4"}]}'
    )
    server.agents.submit_result.submit(
        AGENT,
        claim.execution_id,
        JobResult(success=True, result_data=data, rows_affected=3, truncated=True),
    )
    envelope = server.requests.get_result_content.get(ALICE, request_id)
    assert envelope.result_data_raw == data
    assert (envelope.rows_affected, envelope.truncated) == (3, True)
    with server.store.read() as session:
        summary = session.work.latest_result(request_id)
    assert summary is not None
    assert (summary.truncated, summary.truncation_reason) == (True, "row limit reached (1)")


def test_failed_result_keeps_the_error(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    final = server.agents.submit_result.submit(
        AGENT,
        claim.execution_id,
        JobResult(success=False, error_message="driver error: boom", duration_ms=3),
    )
    assert final[1] is RequestStatus.FAILED
    envelope = server.requests.get_result_content.get(ALICE, request_id)
    assert (envelope.success, envelope.error_message, envelope.result_data) == (
        False,
        "driver error: boom",
        None,
    )
    assert server.audit_rows("execution.failed")[0]["outcome"] == "failure"


def test_result_above_the_persist_limit_is_413(tmp_path: Path) -> None:
    base = default_settings(tmp_path)
    settings = replace(base, result_storage=replace(base.result_storage, max_persist_bytes=1000))
    harness = build_harness(tmp_path, settings)
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        with pytest.raises(PayloadTooLarge, match="result size 1001 exceeds limit 1000"):
            harness.agents.submit_result.submit(
                AGENT, claim.execution_id, JobResult(success=True, result_data="x" * 1001)
            )
        assert harness.status(request_id) is RequestStatus.RUNNING
        assert not [p for p in harness.results.root_dir.rglob("*") if p.is_file()]
    finally:
        harness.close()


def test_late_result_is_accepted_while_no_newer_execution_exists(
    server: ServerHarness,
) -> None:
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    server.clock.advance(61)
    assert server.sweeps.reclaim_leases(server.clock.now()) == 1
    assert server.status(request_id) is RequestStatus.EXECUTION_LOST
    final = server.agents.submit_result.submit(AGENT, claim.execution_id, ok())
    assert final == (request_id, RequestStatus.EXECUTED)
    assert server.audit_types(request_id)[-2:] == ["execution.lost", "execution.completed"]
    assert json.loads(server.audit_rows("execution.completed")[0]["metadata_json"])["late"]
    with pytest.raises(Conflict):
        server.agents.submit_result.submit(AGENT, claim.execution_id, ok())


def test_late_result_is_refused_once_a_newer_execution_exists(server: ServerHarness) -> None:
    request_id = server.create()
    server.poll()
    old = server.claim(request_id)
    server.clock.advance(61)
    server.sweeps.reclaim_leases(server.clock.now())
    # Resume is a later use case: re-dispatch by hand, as it will.
    with server.store.write() as session:
        assert session.work.update_request_status(
            request_id,
            allowed_from={RequestStatus.EXECUTION_LOST},
            to=RequestStatus.DISPATCHED,
            now=server.clock.now(),
        )
    server.clock.advance(1)
    server.poll()
    server.claim(request_id)
    with pytest.raises(Conflict, match="execution is failed, cannot submit result"):
        server.agents.submit_result.submit(AGENT, old.execution_id, ok())


def test_lease_sweep_racing_a_result_still_allows_late_completion(
    server: ServerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a result is late is decided in the write transaction: a sweep committing
    after the submission's first read must not turn an acceptable result into a 409."""
    request_id = server.create()
    server.poll()
    claim = server.claim(request_id)
    server.clock.advance(61)
    real_put = server.results.put

    def put_after_the_sweep(key: str, content: bytes) -> None:
        # Runs between the ownership read (execution still claimed) and the write.
        assert server.sweeps.reclaim_leases(server.clock.now()) == 1
        real_put(key, content)

    monkeypatch.setattr(server.results, "put", put_after_the_sweep)
    final = server.agents.submit_result.submit(AGENT, claim.execution_id, ok())
    assert final == (request_id, RequestStatus.EXECUTED)
    assert server.audit_types(request_id)[-2:] == ["execution.lost", "execution.completed"]
    assert json.loads(server.audit_rows("execution.completed")[0]["metadata_json"])["late"]


def test_stream_only_results_are_relayed_not_stored(tmp_path: Path) -> None:
    settings = default_settings(
        tmp_path, result_policies=(ResultPolicy(delivery_mode=DeliveryMode.STREAM),)
    )
    harness = build_harness(tmp_path, settings)
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        harness.agents.submit_result.submit(AGENT, claim.execution_id, ok())
        envelope = asyncio.run(harness.requests.wait_for_result.wait(ALICE, request_id))
        assert envelope is not None and envelope.result_data["rows"] == [{"x": 1}]
        assert not [p for p in harness.results.root_dir.rglob("*") if p.is_file()]
        with harness.store.read() as session:
            summary = session.work.latest_result(request_id)
        assert summary is not None and summary.storage_key == ""
    finally:
        harness.close()


@pytest.mark.parametrize(
    ("mode", "error", "reason"),
    [
        (
            AuditRedaction.NONE,
            "driver error: duplicate key (email)=(a@b.c)",
            "driver error: duplicate key (email)=(a@b.c)",
        ),
        (AuditRedaction.LITERALS, "driver error: duplicate key (email)=(a@b.c)", "driver error"),
        (AuditRedaction.FULL, "token verification failed: expired", "token verification failed"),
        (AuditRedaction.LITERALS, "no class here, just 'secret' text", "execution failed"),
    ],
)
def test_failed_execution_audit_keeps_only_the_error_class_unless_redaction_is_none(
    tmp_path: Path, mode: AuditRedaction, error: str, reason: str
) -> None:
    harness = build_harness(tmp_path, default_settings(tmp_path, audit=AuditSettings(mode)))
    try:
        request_id = harness.create()
        harness.poll()
        claim = harness.claim(request_id)
        failed = JobResult(success=False, error_message=error, duration_ms=3)
        assert harness.agents.submit_result.submit(AGENT, claim.execution_id, failed)[1] is (
            RequestStatus.FAILED
        )
        [event] = harness.audit_rows("execution.failed")
        assert event["reason"] == reason
        metadata = json.loads(event["metadata_json"])
        if mode is AuditRedaction.NONE:
            assert "error_length" not in metadata
        else:
            assert metadata["error_length"] == len(error)
        # The full text stays with the execution, behind result access.
        with harness.store.read() as session:
            execution = session.work.get_execution(claim.execution_id)
        assert execution is not None and execution.error_message == error
    finally:
        harness.close()
