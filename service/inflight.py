"""Requests admitted and not yet answered, counted in one place, with a wait for the count to reach zero.

The drain (:mod:`service.server`) and a swapped-out version's release (:mod:`service.deployment`) both wait for
their requests to be answered; both wait on :meth:`InFlight.idle`, woken by the last answer rather than polling.
An :class:`asyncio.Event` rather than a :class:`asyncio.Condition`: a request is counted by a plain (sync) context
manager, which cannot take a condition's lock, and "the count is zero" is the only thing ever waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """A count of requests in flight; use on one event loop."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()  # bound to a loop on first wait (Python ≥ 3.10), not here
        self._idle.set()

    @property
    def count(self) -> int:
        """Requests in flight now."""
        return self._count

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count one request until the block ends."""
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no request is in flight (at most ``timeout_s``); True when none is."""
        if self._count == 0:  # at once: wait_for with a timeout of 0 gives up before the wait could start
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
