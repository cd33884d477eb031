"""The scheduler: one queue of items, token-budget batches cut from a length-sorted window, the backend on
its own thread.

Requests become :class:`Job` s of already-tokenized items. One batcher task cuts batches
(:func:`service.batching.window_cut`): it takes the oldest ``sort_window`` items, sorts them by length, cuts the sorted
run into consecutive batches under ``max_batch_tokens`` (rows × longest) and ``max_batch_items``, and
sends the batch that holds the oldest item (so no item starves). Batches run on the
:class:`~service.backend_thread.BackendThread`, one at a time per backend stream (``backend.streams``); one
batch more than the streams exists at once, so the next one is formed while the current ones run and the
backend never waits on Python.

State has one owner and one way to end. The deque holds exactly the live queued items and the set of
batches holds exactly the formed or running ones, so every count (queue depth, items in the system) is
read off them, never kept beside them. A job ends in :meth:`Scheduler._end` alone (scores, NaN, backend
error, cancel, deadline), which also takes its remaining items out of the queue. The deadline is hard:
a request whose scores are not ready by then gets 504, even if its batch is still running; so a request is
admitted only if its scores are likely ready well before it (:mod:`service.admission`), and otherwise gets 429
at once.

Liveness: :meth:`Scheduler.health` says why the scheduler cannot serve (the batcher task died, the
backend thread died, or a batch has run far past its expected time), or ``None``.

Everything except the backend call runs on the event loop, so the queue needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rewardmodel import EncodedInput, FormatSpec, PaddedBatch, pad_batch
from service.admission import Throughput, Work, judge
from service.backend_thread import BackendThread
from service.backends import Backend
from service.batching import BatchLimits, window_cut
from service.errors import BackendFailure, DeadlineExceeded, NotReady, Overloaded, ServiceError

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 2
"""Batches formed or running at once per stream-less backend: one on the backend, the next one ready behind
it (a backend with more streams runs ``streams`` and has one ready)."""

STALL_FACTOR = 10.0
"""A batch is stalled once it has run this many times its expected time (and at least ``stall_s``)."""


class SchedulerObserver(Protocol):
    """Receives what the scheduler measures (the service's metrics implement it)."""

    def item_waited(self, seconds: float) -> None:
        """One item left the queue after ``seconds``."""

    def batch(self, items: int, padded_tokens: int, padding_ratio: float, seconds: float) -> None:
        """One batch ran."""


@dataclass(frozen=True)
class JobResult:
    """A job's scores in item order, and where its time went (the engine passes these on to the HTTP layer)."""

    scores: npt.NDArray[np.float64]
    """``(items,)``, or ``(items, C)`` from a criteria model."""
    queue_s: float
    """Longest time one of its items waited in the queue."""
    inference_s: float
    """Backend time of the batches its items ran in."""
    rows: npt.NDArray[np.float64] | None = None
    """``(items, H)``: each item's read row, when the job asked for them (personal rewards)."""


class Job:
    """One request's items on their way through the scheduler; its outcome arrives in :attr:`future`."""

    def __init__(self, size: int, future: asyncio.Future[JobResult], width: int = 1, rows: bool = False) -> None:
        self.scores = _unscored(size, width)
        self.wants_rows = rows
        self.rows: npt.NDArray[np.float64] | None = None
        self.future = future
        self.unscored = size
        self.queue_s = 0.0
        self.inference_s = 0.0
        self.deadline_timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        """Finished, failed or cancelled."""
        return self.future.done()


@dataclass(eq=False, slots=True)
class _Item:
    job: Job
    slot: int
    encoded: EncodedInput
    enqueued: float
    length: int = field(init=False)

    def __post_init__(self) -> None:
        self.length = len(self.encoded.input_ids)


@dataclass(eq=False)
class _Batch:
    items: list[_Item]
    started: float | None = None
    """perf_counter when the backend thread began it (written by that thread, read by the loop)."""
    expected_s: float = 0.0


@dataclass(frozen=True)
class _Outcome:
    """What the backend thread made of a batch: its live items, their scores, and requests that failed alone."""

    live: list[_Item]
    scores: npt.NDArray[np.float64]
    padded: PaddedBatch | None
    """``None`` when no item was live (nothing ran)."""
    failed: dict[Job, ServiceError] = field(default_factory=dict)
    rows: npt.NDArray[np.float64] | None = None
    """The live items' read rows, when one of their jobs asked for them."""


def _unscored(rows: int, width: int) -> npt.NDArray[np.float64]:
    """NaN scores: one per row, or one per row and criterion."""
    return np.full(rows if width == 1 else (rows, width), np.nan)


def _as_failure(exc: Exception, rows: int) -> ServiceError:
    """A backend's exception as the service error its requests get (a foreign one is a bug below us: logged)."""
    if isinstance(exc, ServiceError):
        return exc
    log.error("the backend raised on a batch of %d items", rows, exc_info=exc)
    return BackendFailure(f"the backend raised {type(exc).__name__}: {exc}")


class Scheduler:
    """Owns the queue, the batcher task and the backend thread. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, backend: Backend, spec: FormatSpec, limits: BatchLimits,
                 observer: SchedulerObserver | None = None, width: int = 1,
                 warm_up: tuple[Work, float] | None = None) -> None:
        """``warm_up``: one warm-up batch's work and seconds (:class:`~service.admission.Throughput`)."""
        self._backend = backend
        self._width = width
        """Outputs per item: 1, or a criteria model's C."""
        self._spec = spec
        self._limits = replace(limits, pad_multiple=backend.pad_multiple, packed=backend.packs)
        """The limits, cutting batches as this backend pads them."""
        self._observer = observer
        self._queue: deque[_Item] = deque()
        self._batches: set[_Batch] = set()
        self._jobs: set[Job] = set()
        """Jobs not yet ended: what a dying batcher must not leave waiting."""
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(PIPELINE_DEPTH - 1 + backend.streams)
        self._thread = BackendThread(workers=backend.streams)
        self._tasks: set[asyncio.Task[None]] = set()
        self._batcher: asyncio.Task[None] | None = None
        self._batcher_died: str | None = None
        self._closing = False
        self._flushing = False
        self._throughput = Throughput(backend.streams, warm_up)

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        return len(self._queue)

    @property
    def in_system(self) -> int:
        """Items waiting or in a formed or running batch: what ``max_queue_items`` bounds."""
        return len(self._queue) + sum(len(b.items) for b in self._batches)

    @property
    def work_in_system(self) -> Work:
        """The items waiting or in a formed or running batch, and their tokens: the work ahead of a new request."""
        running = [it for b in self._batches for it in b.items]
        return Work(len(self._queue) + len(running),
                    sum(it.length for it in self._queue) + sum(it.length for it in running))

    def start(self) -> None:
        """Start the batcher on the running event loop."""
        self._batcher = asyncio.get_running_loop().create_task(self._run(), name="rewardserve-batcher")
        self._batcher.add_done_callback(self._batcher_ended)

    def health(self) -> str | None:
        """Why the scheduler cannot serve (then ``/healthz`` is 503), or ``None``."""
        if self._batcher_died:
            return f"the batcher task died: {self._batcher_died}"
        if self._thread.died:
            return f"the backend thread died: {self._thread.died}"
        now = time.perf_counter()
        for batch in self._batches:
            if batch.started is not None and now - batch.started > self._stall_limit(batch):
                return (f"a batch of {len(batch.items)} items has run for {now - batch.started:.1f} s, far past its "
                        f"expected {batch.expected_s:.2f} s: the backend is stuck")
        return None

    def admit(self, own: Work, deadline: float) -> None:
        """Raise unless a request of ``own`` work, due by ``deadline`` (event-loop time), can be queued now:
        :class:`NotReady` when closing or unhealthy, :class:`Overloaded` past ``max_queue_items`` or when its
        scores would likely be late (:mod:`service.admission`). ``Work(0, 0)`` asks whether the work ahead alone is
        late already (what the engine asks before it spends time tokenizing)."""
        if self._closing:
            raise NotReady("the server is shutting down", kind="draining")
        if (reason := self.health()) is not None:
            raise NotReady.unhealthy(reason)
        ahead = self.work_in_system
        if ahead.items + own.items > self._limits.max_queue_items:
            raise Overloaded(
                f"{ahead.items} items are queued or running and this request adds {own.items}; the limit is "
                f"{self._limits.max_queue_items}", self.retry_after_s())
        verdict = judge(ahead, own, self._throughput, deadline - asyncio.get_running_loop().time())
        if not verdict.admitted:
            this = f"this request ({own.items} items, {own.tokens} tokens)" if own.items else "this request"
            raise Overloaded(
                f"{this} would wait behind {ahead.items} items ({ahead.tokens} tokens) already queued or running; at "
                f"the rate measured ({self._throughput}) its scores would likely be ready in "
                f"{verdict.expected_s:.1f} s, past its deadline", verdict.retry_after_s)

    @property
    def rows_error(self) -> str | None:
        """Why the backend cannot return read rows (None: it can)."""
        return self._backend.rows_error

    def submit(self, items: Sequence[EncodedInput], deadline: float, rows: bool = False) -> Job:
        """Queue ``items`` (one job) due by ``deadline`` (event-loop time), if :meth:`admit` lets them in;
        ``rows``: return their read rows too (a batch holding such a job asks the backend for rows)."""
        self.admit(Work(len(items), sum(len(e.input_ids) for e in items)), deadline)
        loop = asyncio.get_running_loop()
        job = Job(len(items), loop.create_future(), self._width, rows)
        self._jobs.add(job)
        now = time.perf_counter()  # timings use perf_counter: uvloop's loop.time() has millisecond steps
        self._queue.extend(_Item(job, slot, enc, now) for slot, enc in enumerate(items))
        job.deadline_timer = loop.call_at(deadline, self._expire, job)
        self._wakeup.set()
        return job

    async def wait(self, job: Job) -> JobResult:
        """The job's outcome; cancelling the waiter ends the job and drops its queued items."""
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            self._end(job, None)
            raise

    def retry_after_s(self) -> int:
        """Seconds until the work now in the system is likely done (1-60), for ``Retry-After``."""
        return judge(self.work_in_system, Work(0, 0), self._throughput, 0.0).retry_after_s

    def flush(self) -> None:
        """Stop waiting for fuller batches (``max_wait_s``): the process is draining, no more items will come."""
        self._flushing = True
        self._wakeup.set()

    async def close(self) -> None:
        """Stop admitting work, finish what is queued, stop the backend thread."""
        self._closing = self._flushing = True
        self._wakeup.set()
        if self._batcher is not None:
            await asyncio.gather(self._batcher, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._thread.stop(wait=self._thread.alive and not self.health())  # a stuck call is not waited for

    # -- the one end of a job ---------------------------------------------------------------------------------

    def _end(self, job: Job, outcome: JobResult | ServiceError | None) -> None:
        """Finish ``job`` with its result, an error, or (``None``) as cancelled; drop its queued items."""
        if job.done:
            return
        self._jobs.discard(job)
        if isinstance(outcome, JobResult):
            job.future.set_result(outcome)
        else:
            if outcome is None:
                job.future.cancel()
            else:
                job.future.set_exception(outcome)
            if any(it.job is job for it in self._queue):
                self._queue = deque(it for it in self._queue if it.job is not job)
        if job.deadline_timer is not None:
            job.deadline_timer.cancel()

    def _expire(self, job: Job) -> None:
        queued = any(it.job is job for it in self._queue)
        where = ("while its items waited in the queue; retry, send fewer items, or raise request_timeout_s" if queued
                 else "while its batch was running: the backend is slow or stuck (see /healthz)")
        self._end(job, DeadlineExceeded(f"the request's deadline passed {where}"))

    # -- the batcher ------------------------------------------------------------------------------------------

    def _batcher_ended(self, task: asyncio.Task[None]) -> None:
        if self._closing and not task.cancelled() and task.exception() is None:
            return
        reason = "cancelled" if task.cancelled() else f"{type(task.exception()).__name__}: {task.exception()}"
        self._batcher_died = reason
        log.critical("the batcher task died (%s); the server is unhealthy (/healthz answers 503)", reason,
                     exc_info=None if task.cancelled() else task.exception())
        # A job whose items all sit in formed batches still gets its scores; any other (items queued, or
        # taken out of the queue by the batcher as it died) would wait for nothing.
        error = NotReady.unhealthy(f"the batcher task died ({reason})")
        in_batches: dict[Job, int] = {}
        for batch in self._batches:
            for item in batch.items:
                in_batches[item.job] = in_batches.get(item.job, 0) + 1
        for job in list(self._jobs):
            if in_batches.get(job, 0) < len(job.scores):
                self._end(job, error)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            items = await self._next_batch()
            if items is None:
                self._slots.release()
                return
            batch = _Batch(items)
            self._batches.add(batch)
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _next_batch(self) -> list[_Item] | None:
        limits = self._limits
        while True:
            if self._queue:
                if limits.max_wait_s and len(self._queue) < limits.max_batch_items and not self._flushing:
                    remaining = self._queue[0].enqueued + limits.max_wait_s - time.perf_counter()
                    if remaining > 0:
                        self._wakeup.clear()
                        try:
                            await asyncio.wait_for(self._wakeup.wait(), remaining)
                        except TimeoutError:
                            pass
                        continue
                return self._cut(time.perf_counter())
            if self._closing:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def _cut(self, now: float) -> list[_Item]:
        """Take the next batch out of the (non-empty) queue."""
        window = [self._queue.popleft() for _ in range(min(self._limits.sort_window, len(self._queue)))]
        chosen = window_cut([it.length for it in window], self._limits)
        taken = set(chosen)
        self._queue.extendleft(reversed([it for i, it in enumerate(window) if i not in taken]))
        batch = [window[i] for i in chosen]
        for item in batch:
            wait = now - item.enqueued
            item.job.queue_s = max(item.job.queue_s, wait)
            if self._observer:
                self._observer.item_waited(wait)
        return batch

    def _stall_limit(self, batch: _Batch) -> float:
        return max(self._limits.stall_s, STALL_FACTOR * batch.expected_s)

    # -- running a batch --------------------------------------------------------------------------------------

    async def _execute(self, batch: _Batch) -> None:
        rate = self._throughput.padded_tokens_per_s
        batch.expected_s = len(batch.items) * max(it.length for it in batch.items) / rate if rate else 0.0
        loop = asyncio.get_running_loop()
        loop.call_later(self._stall_limit(batch), self._check_stall, batch)
        outcome: _Outcome | ServiceError
        try:
            outcome = await asyncio.wrap_future(self._thread.submit(self._score, batch))
        except Exception as exc:
            outcome = _as_failure(exc, len(batch.items))
        finally:
            self._batches.discard(batch)
            self._slots.release()
        elapsed = time.perf_counter() - (batch.started or time.perf_counter())
        if isinstance(outcome, ServiceError):
            for item in batch.items:
                self._end(item.job, outcome)
            return
        for job, error in outcome.failed.items():
            self._end(job, error)
        if outcome.padded is None:
            return  # every item's request was gone before the batch started
        # a packing backend computes the real tokens only: its batches have no padding
        computed, padding = ((int(outcome.padded.attention_mask.sum()), 0.0) if self._limits.packed else
                             (int(outcome.padded.input_ids.size), outcome.padded.padding_ratio))
        self._throughput.add(Work(len(outcome.live), sum(it.length for it in outcome.live)), computed, elapsed)
        if self._observer:
            self._observer.batch(len(outcome.live), computed, padding, elapsed)
        self._scatter(outcome.live, outcome.scores, elapsed, outcome.rows)

    def _check_stall(self, batch: _Batch) -> None:
        """Log once when ``batch`` stalls (it may have waited behind another batch before it started)."""
        if batch not in self._batches:
            return
        ran = 0.0 if batch.started is None else time.perf_counter() - batch.started
        if ran <= self._stall_limit(batch):
            loop = asyncio.get_running_loop()
            loop.call_later(self._stall_limit(batch) - ran + 0.01, self._check_stall, batch)
        else:
            log.error("a batch of %d items has run for over %.1f s (expected %.2f s): the backend looks stuck; "
                      "/healthz answers 503 until it returns", len(batch.items), self._stall_limit(batch),
                      batch.expected_s)

    def _score(self, batch: _Batch) -> _Outcome:
        """On the backend thread: drop items whose request is gone, then pad and score the rest.

        If the batch fails and holds several requests, each request's items are scored again on their own:
        one request's input (or its size) may be what broke the batch, and the others deserve their scores.
        """
        batch.started = time.perf_counter()
        live = [it for it in batch.items if not it.job.done]
        if not live:
            return _Outcome(live, _unscored(0, self._width), None)
        padded = self._pad([it.encoded for it in live])
        with_rows = any(it.job.wants_rows for it in live)
        try:
            if with_rows:
                scores, rows_read = self._backend.score_rows(padded)
                return _Outcome(live, scores, padded, rows=rows_read)
            return _Outcome(live, self._backend.score(padded), padded)
        except Exception:
            jobs: dict[Job, list[int]] = {}
            for i, item in enumerate(live):
                jobs.setdefault(item.job, []).append(i)
            if len(jobs) == 1:
                raise
        scores = _unscored(len(live), self._width)
        rows: npt.NDArray[np.float64] | None = None
        failed: dict[Job, ServiceError] = {}
        for job, index in jobs.items():
            alone = self._pad([live[i].encoded for i in index])
            try:
                if job.wants_rows:
                    scores[index], mine = self._backend.score_rows(alone)
                    rows = np.full((len(live), mine.shape[1]), np.nan) if rows is None else rows
                    rows[index] = mine
                else:
                    scores[index] = self._backend.score(alone)
            except Exception as exc:
                failed[job] = _as_failure(exc, len(index))
        return _Outcome(live, scores, padded, failed, rows)

    def _pad(self, items: list[EncodedInput]) -> PaddedBatch:
        """``items`` as one batch, padded the way the backend wants."""
        return pad_batch(items, self._spec, self._backend.pad_multiple)

    def _scatter(self, batch: list[_Item], scores: npt.NDArray[np.float64], elapsed: float,
                 rows: npt.NDArray[np.float64] | None = None) -> None:
        timed: set[Job] = set()
        for i, (item, score) in enumerate(zip(batch, scores, strict=True)):
            job = item.job
            if job.done:
                continue
            if not np.isfinite(score).all():
                self._end(job, BackendFailure("the model produced a non-finite score (NaN/inf) for an item of this "
                                              "request; check the checkpoint, its dtype, and the input"))
                continue
            if job not in timed:
                timed.add(job)
                job.inference_s += elapsed
            job.scores[item.slot] = score
            if job.wants_rows:
                if rows is None or not np.isfinite(rows[i]).all():
                    self._end(job, BackendFailure("the model gave no finite read row for an item of this request"))
                    continue
                if job.rows is None:
                    job.rows = np.empty((len(job.scores), rows.shape[1]))
                job.rows[item.slot] = rows[i]
            job.unscored -= 1
            if job.unscored == 0:
                self._end(job, JobResult(job.scores, job.queue_s, job.inference_s, job.rows))
