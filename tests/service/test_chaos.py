"""Faults against a real server, with ``max_wait_ms`` 0 and > 0, one backend stream or two (batches scored at
once on separate threads), and several batches in flight: every request
gets its documented answer, liveness tells the truth, and the next request after each fault gets 200.

Faults come from :class:`tests.faults.Faulty`, which wraps the real onnxruntime backend of a real bundle
and misbehaves on rows holding a marker word: the model, tokenizer, scheduler and HTTP stack are the real ones.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.faults import Faulty
from tests.helpers import until
from tests.server import Running, error_of, running


def post(live: Running, *completions: str, timeout: float = 30) -> httpx.Response:
    items = [{"prompt": "how are you ?", "completion": c} for c in completions]
    return httpx.post(live.url + "/score", json={"items": items}, timeout=timeout)


def served(live: Running) -> None:
    r = post(live, "i am good .")
    assert r.status_code == 200 and len(r.json()["scores"]) == 1, r.text


@pytest.mark.parametrize(("max_wait_ms", "streams"), [(0, 1), (50, 1), (0, 2), (50, 2)])
def test_faults_get_their_answers_and_the_next_request_is_served(bert_onnx_bundle: Path, max_wait_ms: int,
                                                                  streams: int) -> None:
    faulty = Faulty()
    with running(model=bert_onnx_bundle, load=faulty.load, max_wait_ms=max_wait_ms, max_batch_items=4,
                 request_timeout_s=3, batch_stall_s=0.5, streams=streams, threads=2) as live, \
            ThreadPoolExecutor(12) as pool:
        def hold() -> list[Future[httpx.Response]]:
            """One hanging batch on each stream, started one after another (so they are not one batch)."""
            held = []
            for _ in range(streams):
                started = faulty.seen["hang"] + 1
                held.append(pool.submit(post, live, "hang on"))
                until(lambda: faulty.seen["hang"] >= started, "a hanging batch started")  # noqa: B023 (called here)
            return held

        # a raising batch and a NaN item, each among concurrent good requests (several batches in flight):
        # only the faulty request fails
        for marker in ("boom", "nan"):
            bad = pool.submit(post, live, "i am good .", f"the {marker} is here .")
            good = [pool.submit(post, live, f"fine {k} .", f"good {k} .") for k in range(10)]
            error_of(bad.result(), 500, "backend_error")
            for g in good:
                assert g.result().status_code == 200 and len(g.result().json()["scores"]) == 2, g.result().text
            assert faulty.seen[marker] >= 1
            served(live)

        # backend calls that hang past the deadline on every stream: 504 for them and for what queued behind
        # them, /healthz 503 (and rewardserve_ready 0) while they hang; once they return, all is well again
        faulty.release.clear()
        hung = hold()
        behind = pool.submit(post, live, "i am fine .")
        until(lambda: httpx.get(live.url + "/healthz").status_code == 503, "/healthz reports the stall")
        assert "has run for" in error_of(httpx.get(live.url + "/healthz"), 503, "unhealthy")
        assert live.metric("rewardserve_ready") == 0
        for h in hung:
            error_of(h.result(), 504, "deadline_exceeded")
        error_of(behind.result(), 504, "deadline_exceeded")
        faulty.release.set()
        until(lambda: httpx.get(live.url + "/healthz").status_code == 200, "/healthz recovers")
        assert live.metric("rewardserve_ready") == 1
        served(live)

        # a client that disconnects while the batches before its own run: its items never run
        faulty.release.clear()
        holders = hold()
        with pytest.raises(httpx.ReadTimeout):
            post(live, "she walked away .", timeout=0.3)
        until(lambda: live.metric("rewardserve_requests_total", endpoint="/score", code="499") >= 1, "the 499")
        faulty.release.set()
        assert all(h.result().status_code == 200 for h in holders)
        served(live)
        assert faulty.seen["walked"] == 0
        assert live.metric("rewardserve_queue_depth_items") == 0


@pytest.mark.parametrize("max_wait_ms", [0, 50])
def test_a_nan_from_the_model_fails_its_request_and_the_next_one_is_served(poisoned_bundle: Path,
                                                                           max_wait_ms: int) -> None:
    """The reported wedge: a real checkpoint that scores NaN on one word, with max_wait_ms > 0."""
    with running(model=poisoned_bundle, backend="torch", max_wait_ms=max_wait_ms) as live:
        for _ in range(3):
            r = post(live, " the rain")
            assert "non-finite" in error_of(r, 500, "backend_error")
            served(live)
        assert httpx.get(live.url + "/healthz").status_code == 200


def test_a_dead_backend_thread_turns_liveness_red_and_says_why(bert_onnx_bundle: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    faulty = Faulty()
    with caplog.at_level(logging.CRITICAL, logger="service"), running(model=bert_onnx_bundle, load=faulty.load) as live:
        served(live)
        assert "thread died" in error_of(post(live, "die now"), 500, "backend_error")
        assert "backend thread died" in error_of(httpx.get(live.url + "/healthz"), 503, "unhealthy")
        error_of(httpx.get(live.url + "/readyz"), 503, "unhealthy")
        assert "backend thread died" in error_of(post(live, "i am fine ."), 503, "unhealthy")
        assert live.metric("rewardserve_ready") == 0
    assert any("backend thread died" in r.getMessage() and "SystemExit" in r.getMessage() for r in caplog.records)


def test_a_dead_batcher_turns_liveness_red_and_says_why(bert_onnx_bundle: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.CRITICAL, logger="service"), running(model=bert_onnx_bundle) as live:
        served(live)
        assert live.state.engine is not None
        batcher = live.state.engine.scheduler._batcher
        assert batcher is not None
        batcher.get_loop().call_soon_threadsafe(batcher.cancel)  # kill it, as a bug escaping its loop would
        until(lambda: httpx.get(live.url + "/healthz").status_code == 503, "/healthz reports the dead batcher")
        assert "batcher task died" in error_of(httpx.get(live.url + "/healthz"), 503, "unhealthy")
        assert "batcher task died" in error_of(post(live, "i am fine ."), 503, "unhealthy")
        assert live.metric("rewardserve_ready") == 0
    assert any("batcher task died" in r.getMessage() for r in caplog.records)


def test_the_batcher_dying_with_work_queued_fails_that_work_instead_of_hanging(bert_onnx_bundle: Path) -> None:
    faulty = Faulty()
    with running(model=bert_onnx_bundle, load=faulty.load, request_timeout_s=30) as live, \
            ThreadPoolExecutor(3) as pool:
        faulty.release.clear()
        holder = pool.submit(post, live, "hang on")
        until(lambda: faulty.seen["hang"] >= 1, "the holding batch started")
        assert live.state.engine is not None
        scheduler = live.state.engine.scheduler
        formed = pool.submit(post, live, "i am good .")  # cut into the next batch, which waits for the backend
        until(lambda: scheduler.in_system == 2 and scheduler.queue_depth == 0, "the second batch is formed")
        queued = pool.submit(post, live, "i am fine .")  # no batch slot is free: it stays queued
        until(lambda: scheduler.queue_depth == 1, "the third request is queued")
        batcher = scheduler._batcher
        assert batcher is not None
        asyncio.run_coroutine_threadsafe(_cancel(batcher), batcher.get_loop()).result(5)
        assert "batcher task died" in error_of(queued.result(timeout=5), 503, "unhealthy")  # not at its deadline
        faulty.release.set()
        for running_batch in (holder, formed):  # their batches were formed before it died: they get scores
            assert running_batch.result().status_code == 200


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.sleep(0)
