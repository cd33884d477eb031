"""The one in-flight count the drain and a version's release wait on: woken by the last answer, no polling."""

from __future__ import annotations

import asyncio

from service.inflight import InFlight


def test_idle_wakes_when_the_last_request_ends_and_times_out_while_one_is_held() -> None:
    async def go() -> None:
        counted = InFlight()
        assert await counted.idle(0) and counted.count == 0
        first, second = counted.hold(), counted.hold()
        first.__enter__()
        second.__enter__()
        assert counted.count == 2 and not await counted.idle(0.01)
        waiter = asyncio.ensure_future(counted.idle(5))
        first.__exit__(None, None, None)
        await asyncio.sleep(0)
        assert not waiter.done()  # one still in flight
        second.__exit__(None, None, None)
        assert await asyncio.wait_for(waiter, 1) and counted.count == 0

    asyncio.run(go())


def test_a_request_that_raises_is_still_uncounted() -> None:
    async def go() -> None:
        counted = InFlight()
        try:
            with counted.hold():
                raise ValueError("the request failed")
        except ValueError:
            pass
        assert counted.count == 0 and await counted.idle(0)

    asyncio.run(go())
