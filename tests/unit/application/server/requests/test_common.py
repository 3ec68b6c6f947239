"""What the request use cases share: ids, the draining refusal, first-step approvers."""

from __future__ import annotations

import uuid
from dataclasses import replace

from application.server.requests.common import (
    ServerDraining,
    first_step_approvers,
    first_step_selectors,
    new_uuid,
)
from tests.unit.application.server.test_requests_and_claims import ALWAYS, NEEDS_DBA


def test_ids_are_uuid_v4_strings() -> None:
    first, second = new_uuid(), new_uuid()
    assert first != second
    assert uuid.UUID(first).version == 4
    assert str(uuid.UUID(first)) == first


def test_a_draining_server_answers_503_server_shutting_down() -> None:
    refusal = ServerDraining()
    assert (refusal.status, refusal.code) == (503, "server_shutting_down")


def test_first_step_approvers_are_named_by_the_workflow_or_nobody() -> None:
    assert first_step_approvers(NEEDS_DBA) == ("role:dba",)
    assert first_step_selectors(NEEDS_DBA) == NEEDS_DBA.steps[0].selectors
    second_step = replace(NEEDS_DBA, steps=(*NEEDS_DBA.steps, *NEEDS_DBA.steps))
    assert first_step_approvers(second_step) == ("role:dba",)
    assert first_step_approvers(ALWAYS) == ()  # no steps
    assert first_step_approvers(None) == ()
