"""The ids log lines carry: bound per block, per thread, and inherited by spawned threads."""

from __future__ import annotations

import threading

import pytest

from application.agent.threads import spawn
from application.log_context import bind_ids, bound_ids, current_ids, scoped_ids


def test_a_block_binds_ids_and_restores_the_previous_ones() -> None:
    with bound_ids(request_id="r-1"):
        with bound_ids(execution_id="e-1"):
            assert current_ids() == {"request_id": "r-1", "execution_id": "e-1"}
        assert current_ids() == {"request_id": "r-1"}
    assert current_ids() == {}


def test_ids_bound_inside_a_block_end_with_it() -> None:
    with bound_ids(job_id="j-1"):
        bind_ids(execution_id="e-1")
        assert current_ids() == {"job_id": "j-1", "execution_id": "e-1"}
    assert current_ids() == {}


def test_none_values_are_skipped() -> None:
    with bound_ids(request_id=None, job_id="j-1"):
        assert current_ids() == {"job_id": "j-1"}


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="user_id"), bound_ids(user_id="u"):
        pass


def test_another_thread_does_not_see_the_ids_but_a_spawned_one_inherits_them() -> None:
    seen: dict[str, object] = {}

    def record(name: str) -> None:
        seen[name] = dict(current_ids())

    with bound_ids(request_id="r-1"):
        plain = threading.Thread(target=record, args=("plain",))
        plain.start()
        plain.join()
        spawn("child", lambda: record("spawned")).join()
    assert seen == {"plain": {}, "spawned": {"request_id": "r-1"}}


def test_ids_bound_in_a_scoped_call_end_with_it() -> None:
    @scoped_ids
    def handle(request_id: str) -> dict[str, str]:
        bind_ids(request_id=request_id)
        return dict(current_ids())

    assert handle("r-9") == {"request_id": "r-9"}
    assert current_ids() == {}
