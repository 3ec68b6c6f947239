"""Held polls share their periodic store look: one task per scope set, one read per
period while any poll holds on it, and a wake-up only when it finds work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack

from application.server.agent_protocol.poll import _LookKey, _SharedLook
from application.server.store_calls import IN_THREADS
from domain.shared.scopes import Scope

KEY = ((Scope("app", "prod"),), ("execute_select",), True, False)
OTHER = ((Scope("billing", "prod"),), ("execute_select",), True, False)
PERIOD = 0.05


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_polls_held_on_the_same_scopes_share_one_read_a_period() -> None:
    looks: list[str] = []
    woken: list[_LookKey] = []

    def nothing_there() -> bool:
        looks.append("read")
        return False

    async def main() -> None:
        shared = _SharedLook(PERIOD, IN_THREADS, woken.append)
        with ExitStack() as polls:
            for _ in range(500):
                polls.enter_context(shared.holding(KEY, nothing_there))
            await _until(lambda: len(looks) >= 3)

    asyncio.run(main())
    # 500 polls over three periods: one read each period, nothing found, nobody woken.
    assert 3 <= len(looks) <= 4
    assert woken == []


def test_work_found_wakes_the_polls_of_that_key_and_other_keys_read_on_their_own() -> None:
    looks: list[str] = []
    woken: list[_LookKey] = []
    found = {KEY: False, OTHER: True}

    def look_for(key: _LookKey) -> Callable[[], bool]:
        def look() -> bool:
            looks.append("key" if key is KEY else "other")
            return found[key]

        return look

    async def main() -> None:
        shared = _SharedLook(PERIOD, IN_THREADS, woken.append)
        with shared.holding(KEY, look_for(KEY)), shared.holding(OTHER, look_for(OTHER)):
            await _until(lambda: OTHER in woken and "key" in looks)

    asyncio.run(main())
    assert KEY not in woken


def test_the_task_stops_when_the_last_poll_stops_holding() -> None:
    looks: list[int] = []

    def nothing_there() -> bool:
        looks.append(1)
        return False

    async def main() -> bool:
        shared = _SharedLook(PERIOD, IN_THREADS, lambda key: None)
        with shared.holding(KEY, nothing_there):
            task = shared._watches[KEY][1]
            with shared.holding(KEY, nothing_there):
                await _until(lambda: len(looks) >= 1)
            await _until(lambda: len(looks) >= 2)  # one poll left: still watched
            assert not task.done()
        assert KEY not in shared._watches
        await _until(task.done)
        return task.cancelled()

    assert asyncio.run(main())


def test_a_failing_read_is_tried_again_next_period() -> None:
    attempts: list[int] = []
    woken: list[_LookKey] = []

    def look() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("the store is down")
        return True

    async def main() -> None:
        shared = _SharedLook(PERIOD, IN_THREADS, woken.append)
        with shared.holding(KEY, look):
            await _until(lambda: woken == [KEY])

    asyncio.run(main())
    assert len(attempts) == 2
