"""The whole agent over fakes: a dispatched job is claimed, executed and reported."""

from __future__ import annotations

import json

from tests.unit.conftest import Harness


def test_dispatched_select_is_claimed_executed_and_reported(harness: Harness) -> None:
    harness.start()
    request = harness.server.dispatch("SELECT 1")
    assert harness.server.wait_for(lambda: harness.server.result_for(request.id) is not None)
    result = harness.server.result_for(request.id)
    assert result is not None and result.success
    assert json.loads(result.result_data or "")["rows"] == [{"n": 1}]
    assert harness.db().executed == [("select", "SELECT 1", 30)]
    assert harness.stop() == 0
    assert harness.probes.cleared
