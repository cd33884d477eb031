"""The scheduler on its own, with a recording backend (a test double for the scheduler, not a user-facing part)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from rewardmodel import PaddedBatch
from service.backends import Backend
from service.batching import BatchLimits, window_cut
from service.errors import BackendFailure, DeadlineExceeded, NotReady, Overloaded
from service.scheduler import Scheduler, SchedulerObserver
from tests.doubles import SPEC, Recorder, item, items


def limits(**kw: float) -> BatchLimits:
    return BatchLimits(**{"max_batch_tokens": 64, "max_batch_items": 8, "max_queue_items": 100, **kw})  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Yield to the loop until ``condition`` holds (fails after ``seconds``: a wait, not a guess at a sleep)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.001)


async def _held(backend: Recorder, scheduler: Scheduler) -> None:
    """Occupy the backend with one batch so that what is submitted next queues up behind it."""
    backend.gate.clear()
    backend.entered.clear()
    scheduler.submit([item(9)], asyncio.get_running_loop().time() + 30)
    await until(backend.entered.is_set)  # the backend thread is inside the call, held at the gate


def started(backend: Backend, observer: SchedulerObserver | None = None, **kw: float) -> Scheduler:
    """A scheduler over ``backend`` with :func:`limits` ``kw``, its batcher running (call inside the loop)."""
    scheduler = Scheduler(backend, SPEC, limits(**kw), observer)
    scheduler.start()
    return scheduler


def run(coro_fn: Callable[[], object]) -> object:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_jobs_are_batched_together_under_the_budget_and_scores_scattered_in_order() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        jobs = [scheduler.submit(items(length, 3, first=10 * length), deadline) for length in (4, 12, 4, 8)]
        backend.gate.set()
        results = [await scheduler.wait(j) for j in jobs]
        await scheduler.close()
        for job_result, length in zip(results, (4, 12, 4, 8), strict=True):
            assert job_result.scores.tolist() == [10 * length + i + length - 1 for i in range(3)]
        work = backend.batches[1:]
        assert sorted(len(r) for b in work for r in b) == sorted([4] * 6 + [12] * 3 + [8] * 3)
        for batch in work:
            assert len(batch) <= 8 and len(batch) * max(len(r) for r in batch) <= 64
        assert len(work) < 4  # four requests, fewer batches
        # the oldest waiting item (the first job's) goes in the first batch; equal lengths share batches
        assert [10 * 4 + 0, 1, 1, 1] in work[0]
        assert all(len({len(r) for r in b}) <= 2 for b in work)

    run(go)


@pytest.mark.parametrize("max_padding", [0.1, 1.0])
def test_max_padding_splits_mixed_lengths_once_a_batch_is_big_enough(max_padding: float) -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_batch_tokens=4096, max_batch_items=64, max_padding=max_padding)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        tiny = scheduler.submit(items(2, 3, first=200), deadline)  # 3 x 2 tokens, then 3 x 50: under 512 padded
        mixed = scheduler.submit(items(12, 8, first=300) + items(60, 8, first=400), deadline)
        backend.gate.set()
        await scheduler.wait(tiny)
        await scheduler.wait(mixed)
        await scheduler.close()
        shapes = [sorted({len(r) for r in b}) for b in backend.batches[1:]]
        if max_padding < 1:  # 16 rows x 60 would be 60% padding: the short and long items run apart
            assert sorted(shapes) == [[2, 12], [60]]
        else:
            assert shapes == [[2, 12, 60]]

    run(go)


def test_the_oldest_item_is_never_starved_by_shorter_ones() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_batch_tokens=32, max_batch_items=4)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        long_job = scheduler.submit([item(*[5] * 30)], deadline)
        short = [scheduler.submit(items(2, 4, first=100 + 10 * k), deadline) for k in range(5)]
        backend.gate.set()
        await scheduler.wait(long_job)
        await asyncio.gather(*(scheduler.wait(j) for j in short))
        await scheduler.close()
        assert backend.batches[1] == [[5] * 30]

    run(go)


def test_cancelled_and_expired_items_never_run() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend)
        await _held(backend, scheduler)
        loop = asyncio.get_running_loop()
        cancelled = scheduler.submit([item(7, 7)], loop.time() + 30)
        expired = scheduler.submit([item(8, 8)], loop.time() + 0.05)
        kept = scheduler.submit([item(3, 3)], loop.time() + 30)
        waiter = asyncio.ensure_future(scheduler.wait(cancelled))
        await until(lambda: expired.done)  # its 0.05 s deadline passed while the backend was held
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter  # the cancellation has reached the scheduler before the backend is released
        with pytest.raises(DeadlineExceeded):
            await scheduler.wait(expired)
        backend.gate.set()
        assert (await scheduler.wait(kept)).scores.tolist() == [6.0]
        await scheduler.close()
        ran = [row for batch in backend.batches for row in batch]
        assert [7, 7] not in ran and [8, 8] not in ran

    run(go)


def test_admission_limit_raises_overloaded_with_retry_after() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_queue_items=5)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        first = scheduler.submit(items(2, 4), deadline)
        with pytest.raises(Overloaded) as info:
            scheduler.submit(items(2, 1), deadline)
        assert 1 <= info.value.retry_after_s <= 60
        backend.gate.set()
        await scheduler.wait(first)
        scheduler.submit(items(2, 5), deadline)  # room again once the work is done
        await scheduler.close()

    run(go)


def test_a_failing_batch_or_a_nan_fails_only_its_requests() -> None:
    async def go() -> None:
        backend = Recorder(fail_on=lambda b: bool((b.input_ids == 13).any()))
        scheduler = started(backend, max_batch_items=1)
        deadline = asyncio.get_running_loop().time() + 30
        bad, nan, good = (scheduler.submit([item(x, 1)], deadline) for x in (13, 666, 2))
        with pytest.raises(BackendFailure, match="boom"):
            await scheduler.wait(bad)
        with pytest.raises(BackendFailure, match="non-finite"):
            await scheduler.wait(nan)
        assert (await scheduler.wait(good)).scores.tolist() == [3.0]
        await scheduler.close()

    run(go)


def test_max_wait_gathers_items_that_arrive_close_together() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_wait_s=0.2)
        deadline = asyncio.get_running_loop().time() + 30
        jobs = []
        for k in range(4):
            jobs.append(scheduler.submit([item(k + 1, 1)], deadline))
            await asyncio.sleep(0.01)
        await asyncio.gather(*(scheduler.wait(j) for j in jobs))
        await scheduler.close()
        assert len(backend.batches) == 1 and len(backend.batches[0]) == 4

    run(go)


def test_close_finishes_queued_work() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_batch_items=2)
        await _held(backend, scheduler)
        job = scheduler.submit(items(3, 7), asyncio.get_running_loop().time() + 30)
        closing = asyncio.ensure_future(scheduler.close())
        backend.gate.set()
        await closing
        assert job.future.done() and len(job.future.result().scores) == 7

    run(go)


def test_window_cut_takes_the_sorted_run_that_holds_the_oldest_item() -> None:
    lim = limits(max_batch_tokens=12, max_batch_items=3)
    # sorted lengths 2,2,3 | 4,5 | 9: the oldest item (position 0, length 5) is in the second run
    assert window_cut([5, 2, 9, 2, 4, 3], lim) == [0, 4]
    assert window_cut([2, 5, 9, 2, 4, 3], lim) == [0, 3, 5]  # oldest is short: the first run
    assert window_cut([9, 2, 2], lim) == [0]  # a long oldest item runs alone rather than wait
    assert window_cut([7], lim) == [0]


def test_a_raising_item_fails_only_its_own_request_when_batched_with_others() -> None:
    async def go() -> None:
        backend = Recorder(fail_on=lambda b: bool((b.input_ids == 13).any()))
        scheduler = started(backend)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        good1, bad, good2 = (scheduler.submit([item(x, 1), item(x, 2)], deadline) for x in (2, 13, 4))
        backend.gate.set()
        with pytest.raises(BackendFailure, match="boom"):
            await scheduler.wait(bad)
        assert (await scheduler.wait(good1)).scores.tolist() == [3.0, 4.0]
        assert (await scheduler.wait(good2)).scores.tolist() == [5.0, 6.0]
        await scheduler.close()
        assert len(backend.batches[1]) == 6  # they were cut into one batch, which failed, then ran per request
        assert scheduler.in_system == 0 and scheduler.health() is None

    run(go)


@pytest.mark.parametrize(("max_wait_s", "streams"), [(0.0, 1), (0.05, 1), (0.05, 2)])
def test_after_a_failed_or_nan_job_the_next_job_is_served(max_wait_s: float, streams: int) -> None:
    """The wedge: with max_wait > 0 a failed job's items stayed counted and the batcher died."""
    async def go() -> None:
        backend = Recorder(fail_on=lambda b: bool((b.input_ids == 13).any()), streams=streams)
        scheduler = started(backend, max_wait_s=max_wait_s)
        deadline = asyncio.get_running_loop().time() + 30
        for bad_id, error in ((666, "non-finite"), (13, "boom")):
            bad = scheduler.submit([item(bad_id, 1), item(5, 5)], deadline)
            with pytest.raises(BackendFailure, match=error):
                await scheduler.wait(bad)
            assert scheduler.queue_depth == 0 and scheduler.in_system == 0
            nxt = scheduler.submit([item(2, 2)], deadline)
            assert (await asyncio.wait_for(scheduler.wait(nxt), 5)).scores.tolist() == [4.0]
        assert scheduler.health() is None
        await scheduler.close()

    run(go)


class Exploding:
    """An observer that raises on the first waited item: a bug that kills the batcher task."""

    def item_waited(self, seconds: float) -> None:
        raise ZeroDivisionError("planted")

    def batch(self, items: int, padded_tokens: int, padding_ratio: float, seconds: float) -> None:
        pass


def test_a_dead_batcher_is_reported_and_fails_queued_and_new_work() -> None:
    async def go() -> None:
        scheduler = started(Recorder(), observer=Exploding())
        job = scheduler.submit([item(1, 1)], asyncio.get_running_loop().time() + 30)
        with pytest.raises(NotReady) as info:
            await asyncio.wait_for(scheduler.wait(job), 5)
        assert info.value.kind == "unhealthy"
        assert "batcher task died" in (scheduler.health() or "") and "planted" in (scheduler.health() or "")
        with pytest.raises(NotReady, match="batcher task died"):
            scheduler.submit([item(2)], asyncio.get_running_loop().time() + 30)
        await scheduler.close()

    run(go)


class Dying(Recorder):
    """A backend whose call raises a BaseException on id 99, which ends the thread it runs on."""

    def score(self, batch: PaddedBatch) -> np.ndarray:
        if (batch.input_ids == 99).any():
            raise SystemExit("planted")
        return super().score(batch)


@pytest.mark.parametrize("streams", [1, 2])
def test_a_dead_backend_thread_is_reported_and_nothing_waits_on_it(streams: int) -> None:
    async def go() -> None:
        scheduler = started(Dying(streams=streams), max_batch_items=1)
        deadline = asyncio.get_running_loop().time() + 30
        dying = scheduler.submit([item(99)], deadline)
        behind = [scheduler.submit([item(k)], deadline) for k in (3, 4, 5)]
        with pytest.raises(BackendFailure, match="thread died"):
            await asyncio.wait_for(scheduler.wait(dying), 5)
        outcomes = await asyncio.gather(*(asyncio.wait_for(scheduler.wait(j), 5) for j in behind),
                                        return_exceptions=True)
        # none waits: each fails, or (two streams) ran on the other stream before the death was seen
        assert all(isinstance(o, (BackendFailure, NotReady)) or (streams > 1 and not isinstance(o, BaseException))
                   for o in outcomes), outcomes
        assert "backend thread died" in (scheduler.health() or "")
        with pytest.raises(NotReady, match="backend thread died"):
            scheduler.submit([item(4)], deadline)
        await scheduler.close()

    run(go)


def test_a_stuck_batch_makes_the_scheduler_unhealthy_until_it_returns() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, stall_s=0.2)
        loop = asyncio.get_running_loop()
        backend.gate.clear()
        stuck = scheduler.submit([item(1)], loop.time() + 0.5)
        while scheduler.health() is None:
            await asyncio.sleep(0.01)
        assert "has run for" in (scheduler.health() or "")
        with pytest.raises(DeadlineExceeded, match="while its batch was running"):
            await scheduler.wait(stuck)  # the deadline is hard, even for a running batch
        backend.gate.set()
        while scheduler.in_system:
            await asyncio.sleep(0.01)
        assert scheduler.health() is None
        assert (await scheduler.wait(scheduler.submit([item(2)], loop.time() + 5))).scores.tolist() == [2.0]
        await scheduler.close()

    run(go)


def test_flush_stops_waiting_for_a_fuller_batch() -> None:
    async def go() -> None:
        scheduler = started(Recorder(), max_wait_s=30)
        job = scheduler.submit([item(1)], asyncio.get_running_loop().time() + 60)
        scheduler.flush()
        assert (await asyncio.wait_for(scheduler.wait(job), 5)).scores.tolist() == [1.0]
        await scheduler.close()

    run(go)


def test_the_next_batch_forms_while_one_runs_and_a_third_waits_in_the_queue() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        second = scheduler.submit([item(2, 2)], deadline)
        await until(lambda: scheduler.queue_depth == 0)  # cut into a batch while the first one still runs
        assert scheduler.in_system == 2 and not backend.batches
        third = scheduler.submit([item(3, 3)], deadline)
        await asyncio.sleep(0)  # the batcher runs, and has no free slot (PIPELINE_DEPTH batches exist)
        assert scheduler.queue_depth == 1
        backend.gate.set()
        assert (await scheduler.wait(second)).scores.tolist() == [4.0]
        assert (await scheduler.wait(third)).scores.tolist() == [6.0]
        await scheduler.close()
        assert [len(b) for b in backend.batches] == [1, 1, 1]

    run(go)


def test_batches_are_padded_to_the_backends_multiple() -> None:
    async def go() -> None:
        backend = Recorder(pad_multiple=8)
        scheduler = started(backend, max_batch_items=1)
        deadline = asyncio.get_running_loop().time() + 30
        jobs = [scheduler.submit([item(*[k] * length)], deadline) for k, length in ((1, 3), (2, 12), (3, 16))]
        assert [(await scheduler.wait(j)).scores.tolist() for j in jobs] == [[3.0], [24.0], [48.0]]  # pads score 0
        assert backend.widths == [8, 16, 16]
        await scheduler.close()

    run(go)


def test_the_token_limit_counts_the_backends_rounding() -> None:
    """5 items of 5 tokens fit 32 tokens as they are, but not once each row is padded to 8."""
    assert window_cut([5] * 5, limits(max_batch_tokens=32)) == [0, 1, 2, 3, 4]
    assert window_cut([5] * 5, limits(max_batch_tokens=32, pad_multiple=8)) == [0, 1, 2, 3]

    async def go() -> None:
        backend = Recorder(pad_multiple=8)
        scheduler = started(backend, max_batch_tokens=32)  # the limits say 1: the scheduler asks the backend
        await _held(backend, scheduler)
        job = scheduler.submit(items(5, 5), asyncio.get_running_loop().time() + 30)
        backend.gate.set()
        assert len((await scheduler.wait(job)).scores) == 5
        await scheduler.close()
        assert [len(b) for b in backend.batches[1:]] == [4, 1]
        assert all(len(b) * w <= 32 for b, w in zip(backend.batches, backend.widths, strict=True))

    run(go)


def test_a_packing_backends_batches_count_real_tokens_and_ignore_padding() -> None:
    """Items of 2, 30 and 30 tokens under a 64-token limit: padded, three rows of 30 pass it; packed, only the 62
    real tokens count. Past the smallest GEMMs, padding no longer stops a packed batch."""
    lengths = [2, 30, 30]
    padded = limits(max_batch_tokens=64)
    assert window_cut(lengths, padded) == [0, 1]
    assert window_cut(lengths, replace(padded, packed=True)) == [0, 1, 2]
    assert window_cut([30, 30, 30], replace(padded, packed=True)) == [0, 1]  # 90 real tokens would pass 64
    wide = limits(max_batch_tokens=4096, max_batch_items=64, max_padding=0.1)
    mixed = [10] * 30 + [100] * 30
    assert len(window_cut(mixed, wide)) == 30  # padded: the long items would make the batch 90 % padding
    assert len(window_cut(mixed, replace(wide, packed=True))) == 60

    async def go() -> None:
        backend = Recorder(packs=True)
        scheduler = started(backend, max_batch_tokens=64, max_padding=0.1)
        await _held(backend, scheduler)
        job = scheduler.submit([item(*[1] * n) for n in lengths], asyncio.get_running_loop().time() + 30)
        backend.gate.set()
        assert (await scheduler.wait(job)).scores.tolist() == [2.0, 30.0, 30.0]
        await scheduler.close()
        assert [len(b) for b in backend.batches[1:]] == [3]

    run(go)


class Meeting(Recorder):
    """Each call waits (at most 5 s) until ``streams`` calls are inside at once: it passes quickly only if the
    scheduler really runs that many batches at the same time."""

    def __init__(self, streams: int) -> None:
        super().__init__(streams=streams)
        self.meeting = threading.Barrier(streams)

    def score(self, batch: PaddedBatch) -> np.ndarray:
        self.meeting.wait(5)
        return super().score(batch)


def test_a_backend_with_two_streams_runs_two_batches_at_once_and_one_more_forms() -> None:
    async def go() -> None:
        backend = Meeting(streams=2)
        scheduler = started(backend, max_batch_items=1)
        deadline = asyncio.get_running_loop().time() + 30
        jobs = [scheduler.submit([item(k, k)], deadline) for k in (1, 2, 3, 4)]
        await asyncio.sleep(0)  # the batcher forms streams + 1 batches, the fourth item waits in the queue
        assert scheduler.queue_depth == 1 and scheduler.in_system == 4
        results = [await asyncio.wait_for(scheduler.wait(j), 4) for j in jobs[:2]]  # both inside the barrier
        assert [r.scores.tolist() for r in results] == [[2.0], [4.0]]
        assert [(await asyncio.wait_for(scheduler.wait(j), 4)).scores.tolist() for j in jobs[2:]] == [[6.0], [8.0]]
        assert sorted(map(len, backend.batches)) == [1, 1, 1, 1]
        assert scheduler.health() is None
        await scheduler.close()

    run(go)


@pytest.mark.parametrize(("max_wait_s", "items_in_job"), [(0.0, 1), (30.0, 4)])
def test_an_idle_backend_starts_at_once_or_a_full_batch_does_not_wait(max_wait_s: float, items_in_job: int) -> None:
    """max_wait 0: one item starts at once; max_wait 30 s: a job that fills max_batch_items starts at once."""
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_wait_s=max_wait_s, max_batch_items=4)
        job = scheduler.submit(items(2, items_in_job), asyncio.get_running_loop().time() + 60)
        assert len((await asyncio.wait_for(scheduler.wait(job), 2)).scores) == items_in_job
        await scheduler.close()

    run(go)


def test_max_wait_holds_a_batch_that_is_not_full() -> None:
    async def go() -> None:
        scheduler = started(Recorder(), max_wait_s=30, max_batch_items=4)
        job = scheduler.submit(items(2, 3), asyncio.get_running_loop().time() + 60)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(job.future), 0.3)
        scheduler.submit(items(2, 1, first=50), asyncio.get_running_loop().time() + 60)  # now it is full
        assert len((await asyncio.wait_for(scheduler.wait(job), 2)).scores) == 3
        await scheduler.close()

    run(go)


def test_only_the_sort_window_of_oldest_items_is_sorted() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, sort_window=4, max_batch_items=8, max_batch_tokens=1000)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        lengths = [2, 2, 20, 20, 2, 2, 2, 2]  # without the window, the six short items would run together
        jobs = [scheduler.submit([item(100 + k, *[1] * (n - 1))], deadline) for k, n in enumerate(lengths)]
        backend.gate.set()
        for job in jobs:
            await scheduler.wait(job)
        await scheduler.close()
        first = backend.batches[1]
        assert {row[0] for row in first} <= {100, 101, 102, 103}, first  # only the 4 oldest were looked at

    run(go)


def test_a_deadline_that_passes_after_part_of_a_request_started() -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_batch_items=2)
        backend.gate.clear()
        job = scheduler.submit(items(2, 5, first=200), asyncio.get_running_loop().time() + 0.3)
        await until(backend.entered.is_set)  # 2 items run (held), 2 wait in a formed batch, 1 in the queue
        with pytest.raises(DeadlineExceeded, match="waited in the queue"):
            await scheduler.wait(job)
        assert scheduler.queue_depth == 0  # its queued item was dropped
        backend.gate.set()
        await until(lambda: scheduler.in_system == 0)
        await scheduler.close()
        assert [[r[0] for r in b] for b in backend.batches] == [[200, 201]]  # the formed batch never ran

    run(go)


@pytest.mark.parametrize("max_wait_s", [0.0, 0.05])
def test_a_batch_holding_a_job_that_wants_rows_runs_once_and_each_job_gets_what_it_asked(max_wait_s: float) -> None:
    async def go() -> None:
        backend = Recorder()
        scheduler = started(backend, max_wait_s=max_wait_s)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        plain = scheduler.submit([item(2, 1), item(3, 1, 1)], deadline)
        personal = scheduler.submit([item(4, 1, 1, 1), item(5)], deadline, rows=True)
        backend.gate.set()
        got, mine = await scheduler.wait(plain), await scheduler.wait(personal)
        await scheduler.close()
        assert len(backend.batches) == 2 and backend.row_calls == 1  # one batch (after the held one), with rows
        assert got.scores.tolist() == [3.0, 5.0] and got.rows is None
        assert mine.scores.tolist() == [7.0, 5.0]
        assert mine.rows is not None and mine.rows.tolist() == [[4.0, 4.0], [5.0, 1.0]]  # [first id, length]

    run(go)


@pytest.mark.parametrize("max_wait_s", [0.0, 0.05])
def test_a_failing_batch_with_a_rows_job_gives_the_others_their_scores_and_rows(max_wait_s: float) -> None:
    async def go() -> None:
        backend = Recorder(fail_on=lambda b: bool((b.input_ids == 13).any()))
        scheduler = started(backend, max_wait_s=max_wait_s)
        await _held(backend, scheduler)
        deadline = asyncio.get_running_loop().time() + 30
        personal = scheduler.submit([item(4, 1), item(6, 1, 1)], deadline, rows=True)
        bad = scheduler.submit([item(13, 1)], deadline, rows=True)
        plain = scheduler.submit([item(2, 1)], deadline)
        backend.gate.set()
        with pytest.raises(BackendFailure, match="boom"):
            await scheduler.wait(bad)
        mine, got = await scheduler.wait(personal), await scheduler.wait(plain)
        assert mine.rows is not None and mine.rows.tolist() == [[4.0, 2.0], [6.0, 3.0]]
        assert mine.scores.tolist() == [5.0, 8.0] and got.scores.tolist() == [3.0] and got.rows is None
        # the next job is served as usual
        after = await scheduler.wait(scheduler.submit([item(7)], deadline, rows=True))
        assert after.rows is not None and after.rows.tolist() == [[7.0, 1.0]]
        await scheduler.close()
        assert scheduler.in_system == 0 and scheduler.health() is None

    run(go)
