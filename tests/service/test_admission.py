"""Admission by time: a request whose scores would not be ready before its deadline gets 429 at once, never a
504 after waiting in the queue, and never no answer. Scheduler-level with a slow backend double (the settings that
change the batcher's path vary: ``max_wait_ms`` 0 and > 0, one and two streams, a rate seeded by warm-up or
measured by the first batch), and over HTTP with a real server on a throttled backend."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.admission import ADMIT_SHARE, Throughput, Work, judge
from service.backends import load_backend
from service.batching import BatchLimits
from service.errors import DeadlineExceeded, Overloaded
from service.scheduler import Job, Scheduler
from tests.doubles import SPEC, Throttled, Timed, items
from tests.server import error_of, running


def test_the_verdict_compares_the_expected_completion_with_the_time_left() -> None:
    rate = Throughput(seed=(Work(10, 1000), 1.0))  # 10 items/s, 1000 tokens/s
    fits = judge(Work(2, 600), Work(2, 200), rate, time_left_s=1.0)
    assert fits.expected_s == pytest.approx(0.8) and fits.admitted  # 0.8 s within 0.8 of 1 s
    late = judge(Work(2, 5000), Work(2, 200), rate, time_left_s=1.0)
    assert not late.admitted and late.retry_after_s == 5  # 5.2 s expected, 0.8 s allowed: 4.4 s, rounded up
    # short items: the rows, not the tokens, rule (a per-row cost the token rate would miss)
    assert judge(Work(40, 400), Work(8, 80), rate, 10.0).expected_s == pytest.approx(4.8)
    assert judge(Work(0, 0), Work(10**6, 10**9), rate, 1.0).admitted  # nothing ahead: an idle server takes it
    assert judge(Work(10**6, 10**9), Work(1, 10), Throughput(), 1.0).admitted  # nothing measured: the count bounds
    assert judge(Work(10**6, 10**9), Work(1, 10), rate, 1.0).retry_after_s == 60  # capped
    assert not judge(Work(1, 1), Work(1, 1), rate, -5.0).admitted  # a deadline already past admits nothing queued
    assert ADMIT_SHARE < 1


def test_the_rates_follow_the_batches_and_count_every_stream() -> None:
    two = Throughput(streams=2)
    two.add(Work(8, 800), padded_tokens=1024, seconds=1.0)  # each of two streams ran such a batch in 1 s
    assert (two.items_per_s, two.tokens_per_s, two.padded_tokens_per_s) == (16, 1600, 1024)
    two.add(Work(8, 800), padded_tokens=1024, seconds=0.5)  # twice as fast: the mean moves a fifth of the way
    assert two.items_per_s == pytest.approx(0.8 * 16 + 0.2 * 32)


@pytest.mark.parametrize(("max_wait_s", "streams", "seeded"), [(0.0, 1, True), (0.05, 1, True), (0.0, 2, False),
                                                               (0.05, 2, False)])
def test_past_capacity_every_request_gets_its_scores_or_429_at_once(max_wait_s: float, streams: int,
                                                                    seeded: bool) -> None:
    """Forty 8-item requests arrive at once at a backend that scores 100 items/s, each due in 1 s: some fit and are
    scored in time, the rest are refused on arrival; none waits in the queue until its deadline."""
    row_s, length = 0.01 * streams, 4  # each stream takes row_s per row: 100 items/s, 400 tokens/s in all

    async def go() -> None:
        backend = Timed(row_s, streams=streams)
        limits = BatchLimits(max_batch_tokens=64, max_batch_items=8, max_queue_items=4096, max_wait_s=max_wait_s)
        scheduler = Scheduler(backend, SPEC, limits, warm_up=(Work(8, 8 * length), 8 * row_s) if seeded else None)
        scheduler.start()
        loop = asyncio.get_running_loop()
        if not seeded:  # the first batch measures the rate
            await scheduler.wait(scheduler.submit(items(length, 8), loop.time() + 5))
        refused: list[Overloaded] = []
        admitted = []
        for k in range(40):
            try:
                admitted.append(scheduler.submit(items(length, 8, first=10 * k + 1), loop.time() + 1.0))
            except Overloaded as exc:
                refused.append(exc)
        outcomes = await asyncio.gather(*(scheduler.wait(job) for job in admitted), return_exceptions=True)
        await scheduler.close()
        assert not [o for o in outcomes if isinstance(o, DeadlineExceeded)], "an admitted request missed its deadline"
        assert all(o.scores.shape == (8,) for o in outcomes)  # type: ignore[union-attr]
        # 0.8 s of 0.8 s of work fits: about ten requests, not all forty, and not one
        assert 5 <= len(admitted) <= 12 and len(refused) == 40 - len(admitted)
        assert all(1 <= e.retry_after_s <= 4 for e in refused) and "past its deadline" in refused[-1].message
        assert refused[-1].retry_after_s > refused[0].retry_after_s - 1  # later ones wait no less

    asyncio.run(go())


def test_the_queue_drains_and_a_refused_request_is_admitted_after_retry_after() -> None:
    async def go() -> None:
        scheduler = Scheduler(Timed(0.01), SPEC, BatchLimits(64, 8, 4096), warm_up=(Work(8, 32), 0.08))
        scheduler.start()
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        with pytest.raises(Overloaded) as info:
            while len(jobs) < 20:
                jobs.append(scheduler.submit(items(4, 8), loop.time() + 1.0))
        assert 8 <= len(jobs) <= 10  # 0.8 s of work at 100 items/s: ten 8-item requests, less the one submitting
        await asyncio.sleep(info.value.retry_after_s)
        late = scheduler.submit(items(4, 8), loop.time() + 1.0)  # the work ahead is done by now
        assert (await scheduler.wait(late)).scores.shape == (8,)
        await asyncio.gather(*(scheduler.wait(j) for j in jobs))
        await scheduler.close()

    asyncio.run(go())


def test_a_real_server_on_a_slow_backend_answers_overload_with_200_or_429_only(bert_onnx_bundle: Path) -> None:
    """auto_engine.py's overload probe, scaled down: closed-loop clients far past what a throttled backend scores
    before the 3 s deadline, with the default queue bound. Every request is answered, 200 or 429, none 504."""

    def slow(root: Path, card: Any, settings: Any) -> Throttled:
        return Throttled(load_backend(root, card, settings), row_s=0.004)

    with running(model=bert_onnx_bundle, load=slow, request_timeout_s=3.0, max_items_per_request=32,
                 max_wait_ms=5) as live:
        stop = time.monotonic() + 4
        codes: list[int] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            items = [{"prompt": f"q {k} ?", "completion": f" good {i} {k}"} for i in range(32)]
            while time.monotonic() < stop:
                r = httpx.post(live.url + "/score", json={"items": items}, timeout=30)
                with lock:
                    codes.append(r.status_code)
                if r.status_code == 429:
                    error_of(r, 429, "overloaded")
                    assert 1 <= int(r.headers["retry-after"]) <= 60
                    time.sleep(0.05)
                else:
                    assert r.status_code == 200, r.text
                    assert len(r.json()["scores"]) == 32

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(client, range(32)))  # a client's exception (no answer, a 504) surfaces here
        assert set(codes) == {200, 429}, codes
        assert live.metric("rewardserve_requests_total", status="504") == 0
