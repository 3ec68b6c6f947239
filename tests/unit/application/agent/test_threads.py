"""`start_task`: short-lived work on reused daemon threads."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from application.agent.threads import call_later, start_task

_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("label", default="none")


def _wait(event: threading.Event) -> None:
    assert event.wait(5), "the task did not run"


def test_a_task_runs_on_a_daemon_thread_named_after_it() -> None:
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def work() -> None:
        thread = threading.current_thread()
        seen.append((thread.name, thread.daemon))
        done.set()

    task = start_task("job-1", work)
    _wait(done)
    task.join(5)
    assert not task.is_alive()
    assert seen == [("job-1", True)]


def test_a_finished_task_leaves_its_thread_for_the_next_one() -> None:
    threads: list[threading.Thread] = []
    start_task("first", lambda: threads.append(threading.current_thread())).join(5)
    start_task("second", lambda: threads.append(threading.current_thread())).join(5)
    assert len(threads) == 2
    assert threads[0] is threads[1]
    assert not any(t.name in ("first", "second") for t in threading.enumerate())


def test_tasks_running_at_once_get_threads_of_their_own() -> None:
    release = threading.Event()
    both_running = threading.Barrier(3)

    def work() -> None:
        both_running.wait(5)
        release.wait(5)

    first = start_task("a", work)
    second = start_task("b", work)
    both_running.wait(5)  # would time out if one task waited for the other's thread
    release.set()
    first.join(5)
    second.join(5)
    assert not first.is_alive() and not second.is_alive()


def test_a_task_sees_the_context_variables_of_its_starter() -> None:
    seen: list[str] = []
    token = _LABEL.set("from the starter")
    try:
        start_task("ctx", lambda: seen.append(_LABEL.get())).join(5)
    finally:
        _LABEL.reset(token)
    start_task("ctx-2", lambda: seen.append(_LABEL.get())).join(5)
    assert seen == ["from the starter", "none"]


def test_join_from_the_task_itself_returns_at_once() -> None:
    joined = threading.Event()
    holder: list[object] = []
    ready = threading.Event()

    def work() -> None:
        ready.wait(5)
        task = holder[0]
        assert hasattr(task, "join")
        task.join()
        joined.set()

    holder.append(start_task("self-join", work))
    ready.set()
    _wait(joined)


def test_an_uncaught_error_is_reported_and_the_thread_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[tuple[type[BaseException] | None, str]] = []
    monkeypatch.setattr(
        threading,
        "excepthook",
        lambda args: reported.append((args.exc_type, args.thread.name if args.thread else "")),
    )

    def fail() -> None:
        raise RuntimeError("boom")

    failed = start_task("failing", fail)
    failed.join(5)
    assert reported == [(RuntimeError, "failing")]
    ran = threading.Event()
    start_task("after", ran.set)
    _wait(ran)


# --- call_later ------------------------------------------------------------------------


def test_a_scheduled_call_runs_after_its_delay_on_a_thread_named_after_it() -> None:
    names: list[str] = []
    ran = threading.Event()
    started = time.monotonic()

    def fire() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    call_later("deadline-1", 0.1, fire)
    _wait(ran)
    assert time.monotonic() - started >= 0.1
    assert names == ["deadline-1"]


def test_a_cancelled_call_never_runs() -> None:
    fired = threading.Event()
    call_later("cancelled", 0.05, fired.set).cancel()
    witness = threading.Event()
    call_later("witness", 0.1, witness.set)
    _wait(witness)  # due after the cancelled one: the timer thread has been past it
    assert not fired.is_set()


def test_an_earlier_call_scheduled_later_is_not_held_behind_a_later_one() -> None:
    late = threading.Event()
    early = threading.Event()
    call_later("late", 30, late.set)
    started = time.monotonic()
    call_later("early", 0.05, early.set)
    _wait(early)
    assert time.monotonic() - started < 5
    assert not late.is_set()


def test_a_call_that_blocks_does_not_delay_the_next() -> None:
    release = threading.Event()
    second = threading.Event()
    call_later("blocking", 0.01, lambda: release.wait(5) and None)
    call_later("second", 0.05, second.set)
    _wait(second)
    release.set()
