"""Held polls share their periodic store look: one read per scope set per period."""

from __future__ import annotations

import asyncio
import threading

from application.server.agent_protocol.poll import _SharedLook
from application.server.store_calls import IN_THREADS
from domain.shared.scopes import Scope

KEY = ((Scope("app", "prod"),), ("execute_select",), True, False)
OTHER = ((Scope("billing", "prod"),), ("execute_select",), True, False)


def test_polls_held_on_the_same_scopes_wait_on_one_store_read() -> None:
    looks: list[str] = []
    release = threading.Event()

    def look() -> bool:
        looks.append("read")
        release.wait(5)
        return True

    async def main() -> list[bool]:
        shared = _SharedLook(period_secs=60, calls=IN_THREADS)
        waiting = [asyncio.create_task(shared.has_work(KEY, look)) for _ in range(500)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(*waiting)

    assert asyncio.run(main()) == [True] * 500
    assert looks == ["read"]


def test_other_scopes_and_a_later_period_read_again() -> None:
    looks: list[int] = []

    def look() -> bool:
        looks.append(1)
        return False

    async def main() -> None:
        shared = _SharedLook(period_secs=0.05, calls=IN_THREADS)
        assert await shared.has_work(KEY, look) is False
        assert await shared.has_work(OTHER, look) is False
        assert await shared.has_work(KEY, look) is False  # same period: shared
        await asyncio.sleep(0.06)
        assert await shared.has_work(KEY, look) is False

    asyncio.run(main())
    assert len(looks) == 3


def test_a_poll_that_goes_away_does_not_cancel_the_others_answer() -> None:
    release = threading.Event()

    def look() -> bool:
        release.wait(5)
        return True

    async def main() -> bool:
        shared = _SharedLook(period_secs=60, calls=IN_THREADS)
        gone = asyncio.create_task(shared.has_work(KEY, look))
        staying = asyncio.create_task(shared.has_work(KEY, look))
        await asyncio.sleep(0.02)
        gone.cancel()
        release.set()
        return await staying

    assert asyncio.run(main()) is True
