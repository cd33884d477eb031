"""The scheduler: one queue of items, token-budget batches cut from a length-sorted window, the backend on
its own thread.

Requests become :class:`Job` s of already-tokenized items. One batcher task cuts batches: it takes the
oldest ``sort_window`` live items, sorts them by length, cuts the sorted run into consecutive batches
under ``max_batch_tokens`` (rows × longest) and ``max_batch_items``, and sends the batch that holds the
oldest item (so no item starves). Batches run one at a time
on a dedicated backend thread (onnxruntime and torch release the GIL); up to :data:`PIPELINE_DEPTH`
batches exist at once, so the next one is formed while the current one runs and the backend never waits
on Python. Scores are scattered back to each job. A job that was cancelled (client gone) or whose
deadline passed before all its items started has its items dropped: from the queue at once, and from a
formed batch when the backend thread picks it up.

Everything except the backend call runs on the event loop, so the queue needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rewardmodel import EncodedInput, FormatSpec, PaddedBatch, pad_batch
from service.backends import Backend
from service.errors import BackendFailure, DeadlineExceeded, NotReady, Overloaded, ServiceError

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 2
"""Batches formed or running at once: one on the backend, the next one ready behind it."""


@dataclass(frozen=True)
class BatchLimits:
    """How batches are cut and how much work the process admits."""

    max_batch_tokens: int
    max_batch_items: int
    max_queue_items: int
    max_wait_s: float = 0.0
    sort_window: int = 1024
    max_padding: float = 1.0
    """A batch stops growing when the next item would make more than this share of it padding, once it
    holds ``EFFICIENT_TOKENS``; 1.0: grow to the limits whatever the padding."""


EFFICIENT_TOKENS = 512
"""Padded tokens below which a batch grows whatever its padding: the GEMMs of smaller batches run far
below the CPU's peak, so splitting them saves less than it costs."""


def batch_end(lengths: Sequence[int], lo: int, limits: BatchLimits) -> int:
    """Where the batch starting at ``lo`` of ascending ``lengths`` ends (exclusive): it grows while it stays
    under the token and item limits and, past ``EFFICIENT_TOKENS``, under ``max_padding``."""
    hi, real = lo + 1, lengths[lo]
    while hi < len(lengths) and hi - lo < limits.max_batch_items:
        length = lengths[hi]
        padded = (hi - lo + 1) * length
        if padded > limits.max_batch_tokens or (
                padded > EFFICIENT_TOKENS and 1 - (real + length) / padded > limits.max_padding):
            break
        real += length
        hi += 1
    return hi


class SchedulerObserver(Protocol):
    """Receives what the scheduler measures (the service's metrics implement it)."""

    def item_waited(self, seconds: float) -> None:
        """One item left the queue after ``seconds``."""

    def batch(self, items: int, padded_tokens: int, padding_ratio: float, seconds: float) -> None:
        """One batch ran."""


class Job:
    """One request's items on their way through the scheduler; results arrive in :attr:`future`."""

    def __init__(self, size: int, deadline: float, future: asyncio.Future[npt.NDArray[np.float64]]) -> None:
        self.scores = np.full(size, np.nan)
        self.deadline = deadline
        self.future = future
        self.unscored = size
        self.in_queue = size
        """Items in the queue (not yet cut into a batch)."""
        self.unstarted = size
        """Items the backend has not started on (queued, or in a formed batch waiting for the backend)."""
        self.queue_s = 0.0
        """Longest time one of its items waited in the queue."""
        self.inference_s = 0.0
        """Backend time of the batches its items ran in."""

    @property
    def done(self) -> bool:
        """Finished, failed or cancelled."""
        return self.future.done()

    def fail(self, error: ServiceError) -> None:
        """Finish with ``error`` unless already finished."""
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False, slots=True)
class _Item:
    job: Job
    slot: int
    encoded: EncodedInput
    enqueued: float
    length: int = field(init=False)

    def __post_init__(self) -> None:
        self.length = len(self.encoded.input_ids)


class _Throughput:
    """Exponentially weighted items per second of the backend, for Retry-After."""

    def __init__(self) -> None:
        self.items_per_s = 0.0

    def add(self, items: int, seconds: float) -> None:
        rate = items / max(seconds, 1e-6)
        self.items_per_s = rate if not self.items_per_s else 0.8 * self.items_per_s + 0.2 * rate


class Scheduler:
    """Owns the queue, the batcher task and the backend thread. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, backend: Backend, spec: FormatSpec, limits: BatchLimits,
                 observer: SchedulerObserver | None = None) -> None:
        self._backend = backend
        self._spec = spec
        self._limits = limits
        self._observer = observer
        self._queue: deque[_Item] = deque()
        self._queued = 0  # live items waiting (items of finished jobs are dropped lazily)
        self._running = 0  # items in batches that are formed or running
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(PIPELINE_DEPTH)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rewardserve-backend")
        self._tasks: set[asyncio.Task[None]] = set()
        self._batcher: asyncio.Task[None] | None = None
        self._closing = False
        self._throughput = _Throughput()

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        return self._queued

    @property
    def in_system(self) -> int:
        """Items waiting or running: what ``max_queue_items`` bounds."""
        return self._queued + self._running

    def start(self) -> None:
        """Start the batcher on the running event loop."""
        self._batcher = asyncio.get_running_loop().create_task(self._run(), name="rewardserve-batcher")

    def submit(self, items: Sequence[EncodedInput], deadline: float) -> Job:
        """Queue ``items`` (one job) due by ``deadline`` (event-loop time); raises :class:`Overloaded`."""
        if self._closing:
            raise NotReady("the server is shutting down", kind="draining")
        if self.in_system + len(items) > self._limits.max_queue_items:
            raise Overloaded(
                f"{self.in_system} items are queued or running and this request adds {len(items)}; the limit is "
                f"{self._limits.max_queue_items}", self.retry_after_s())
        loop = asyncio.get_running_loop()
        job = Job(len(items), deadline, loop.create_future())
        now = time.perf_counter()  # timings use perf_counter: uvloop's loop.time() has millisecond steps
        self._queue.extend(_Item(job, slot, enc, now) for slot, enc in enumerate(items))
        self._queued += len(items)
        timer = loop.call_at(deadline, self._expire, job)
        job.future.add_done_callback(lambda _: timer.cancel())
        self._wakeup.set()
        return job

    async def wait(self, job: Job) -> npt.NDArray[np.float64]:
        """The job's scores in item order; cancelling the waiter drops the job's queued items."""
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self.cancel(job)
            raise

    def cancel(self, job: Job) -> None:
        """Drop the job's queued items (they will not run) and finish it as cancelled."""
        self._forget_queued(job)
        job.future.cancel()

    def retry_after_s(self) -> int:
        """Seconds until the work now in the system is likely done (1–60), for ``Retry-After``."""
        rate = self._throughput.items_per_s
        return 1 if not rate else max(1, min(60, math.ceil(self.in_system / rate)))

    async def close(self) -> None:
        """Stop admitting work, finish what is queued, stop the backend thread."""
        self._closing = True
        self._wakeup.set()
        if self._batcher is not None:
            await self._batcher
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._thread.shutdown(wait=True)

    def _forget_queued(self, job: Job) -> None:
        self._queued -= job.in_queue
        job.in_queue = 0

    def _expire(self, job: Job) -> None:
        if job.done or not job.unstarted:
            return  # finished, or all its items already running: their results are worth waiting for
        self._forget_queued(job)
        job.fail(DeadlineExceeded("the request's deadline passed while its items waited in the queue; "
                                  "retry, send fewer items, or raise request_timeout_s"))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            if batch is None:
                self._slots.release()
                return
            task = loop.create_task(self._execute(batch, loop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _next_batch(self) -> list[_Item] | None:
        limits = self._limits
        while True:
            if self._queued:
                if limits.max_wait_s and self._queued < limits.max_batch_items and not self._closing:
                    oldest = next(it.enqueued for it in self._queue if not it.job.done)
                    remaining = oldest + limits.max_wait_s - time.perf_counter()
                    if remaining > 0:
                        self._wakeup.clear()
                        try:
                            await asyncio.wait_for(self._wakeup.wait(), remaining)
                        except TimeoutError:
                            pass
                        continue
                batch = self._cut(time.perf_counter())
                if batch:
                    return batch
            if self._closing:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def _cut(self, now: float) -> list[_Item]:
        """The next batch: the run of the length-sorted window, cut under the limits, that holds the oldest item."""
        limits = self._limits
        window: list[_Item] = []
        while self._queue and len(window) < limits.sort_window:
            item = self._queue.popleft()
            if not item.job.done:
                window.append(item)
        if not window:
            self._queued = 0
            return []
        # Cut the sorted window into consecutive batches from the shortest item up (what offline scoring
        # does) and take the one holding the oldest item: batches stay tight, the rest of the window stays
        # cut the same way for the next call, and the oldest item never waits behind newer ones.
        order = sorted(range(len(window)), key=lambda i: window[i].length)
        oldest = order.index(0)  # window[0] is the oldest item
        lengths = [window[i].length for i in order]
        lo = 0
        while (hi := batch_end(lengths, lo, limits)) <= oldest:
            lo = hi
        chosen = set(order[lo:hi])
        self._queue.extendleft(reversed([it for i, it in enumerate(window) if i not in chosen]))
        batch = [window[i] for i in sorted(chosen)]
        for item in batch:
            item.job.in_queue -= 1
            wait = now - item.enqueued
            item.job.queue_s = max(item.job.queue_s, wait)
            if self._observer:
                self._observer.item_waited(wait)
        self._queued -= len(batch)
        self._running += len(batch)
        return batch

    async def _execute(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        started = time.perf_counter()
        try:
            live, scores, padded = await loop.run_in_executor(self._thread, self._score, batch, loop)
            error: ServiceError | None = None
        except ServiceError as exc:
            error = exc
        except Exception as exc:  # a bug below us: fail this batch's requests, keep serving the others
            log.exception("the backend raised on a batch of %d items", len(batch))
            error = BackendFailure(f"the backend raised {type(exc).__name__}: {exc}")
        finally:
            elapsed = time.perf_counter() - started
            self._running -= len(batch)
            self._slots.release()
        if error is not None:
            for item in batch:
                item.job.fail(error)
            return
        if padded is None:
            return  # every item's request was gone before the batch started
        self._throughput.add(len(live), elapsed)
        if self._observer:
            self._observer.batch(len(live), int(padded.input_ids.size), padded.padding_ratio, elapsed)
        self._scatter(live, scores, elapsed)

    def _score(self, batch: list[_Item], loop: asyncio.AbstractEventLoop,
               ) -> tuple[list[_Item], npt.NDArray[np.float64], PaddedBatch | None]:
        """On the backend thread: drop items whose request is gone, then pad and score the rest."""
        live = [it for it in batch if not it.job.done]
        loop.call_soon_threadsafe(self._started, batch)
        if not live:
            return live, np.empty(0), None
        padded = pad_batch([it.encoded for it in live], self._spec)
        return live, self._backend.score(padded), padded

    @staticmethod
    def _started(batch: list[_Item]) -> None:
        for item in batch:
            item.job.unstarted -= 1

    @staticmethod
    def _scatter(batch: list[_Item], scores: npt.NDArray[np.float64], elapsed: float) -> None:
        timed: set[int] = set()
        for item, score in zip(batch, scores, strict=True):
            job = item.job
            if job.done:
                continue
            if not math.isfinite(score):
                job.fail(BackendFailure("the model produced a non-finite score (NaN/inf) for an item of this "
                                        "request; check the checkpoint, its dtype, and the input"))
                continue
            if id(job) not in timed:
                timed.add(id(job))
                job.inference_s += elapsed
            job.scores[item.slot] = score
            job.unscored -= 1
            if job.unscored == 0:
                job.future.set_result(job.scores)
