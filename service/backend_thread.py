"""The one thread the backend runs on, which knows whether it is alive.

The scheduler used a one-worker ``ThreadPoolExecutor``; it has no way to say that its thread is gone,
and a worker never dies of an exception anyway. This thread runs calls in order, hands each result or
exception to a ``concurrent.futures.Future`` (the event loop awaits it with ``asyncio.wrap_future``),
and if something escapes the call loop (a ``BaseException`` such as ``SystemExit`` raised inside a
native library, or a bug here) it records why, fails the call it was running and every call queued
behind it, and refuses new ones: nothing waits forever on a dead thread, and ``/healthz`` can say so.

A backend that runs several batches at once (``streams`` > 1) gets one such thread per stream, all taking
calls from the same queue: a worker that dies takes the whole set down the same way, since a backend that
lost a stream to a native crash cannot be trusted with the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from service.errors import BackendFailure

log = logging.getLogger(__name__)

T = TypeVar("T")
_STOP = object()


class BackendThread:
    """``workers`` daemon threads (one per backend stream) that run submitted calls, each one at a time."""

    def __init__(self, name: str = "rewardserve-backend", workers: int = 1) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "died" against submit(), which runs on another thread
        self.died: str | None = None
        """Why a thread ended unexpectedly; ``None`` while they run (or after a clean :meth:`stop`)."""
        self._threads = [threading.Thread(target=self._loop, name=name if workers == 1 else f"{name}-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def alive(self) -> bool:
        """Every thread is running and will take calls."""
        return all(t.is_alive() for t in self._threads) and self.died is None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the thread; a dead thread fails the future at once."""
        future: Future[T] = Future()
        with self._lock:
            if self.died is not None:
                future.set_exception(BackendFailure(f"the backend thread has died ({self.died})"))
                return future
            self._calls.put((future, fn, args))
        return future

    def stop(self, wait: bool = True) -> None:
        """Finish the calls already submitted, then end the threads."""
        for _ in self._threads:
            self._calls.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()

    def _loop(self) -> None:
        current: Future[Any] | None = None
        try:
            while (call := self._calls.get()) is not _STOP:
                current, fn, args = call
                if current.set_running_or_notify_cancel():
                    try:
                        current.set_result(fn(*args))
                    except Exception as exc:  # an ordinary failure belongs to this call only
                        current.set_exception(exc)
                current = None
        except BaseException as exc:
            self._die(f"{type(exc).__name__}: {exc}", current)

    def _die(self, reason: str, current: Future[Any] | None) -> None:
        log.critical("the backend thread died: %s; the server is unhealthy (/healthz answers 503)", reason)
        error = BackendFailure(f"the backend thread died while running this batch ({reason})")
        with self._lock:
            self.died = reason
        if current is not None and not current.done():
            current.set_exception(error)
        while True:  # whatever was queued behind it will never run
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not _STOP and not call[0].done():
                call[0].set_exception(error)
        for _ in self._threads[1:]:  # the other workers finish their batch, then end (stop() may join them)
            self._calls.put(_STOP)
