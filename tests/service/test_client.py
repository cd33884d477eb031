"""The Python client against the real server: chunking, order, retries honouring Retry-After, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardserve.client import AsyncRewardClient, RetryPolicy, RewardClient, RewardServeError
from tests.server import running
from tests.service.test_http import offline

PROMPTS = [f"how are you {i} ?" for i in range(20)]
REPLIES = [" i am good ." if i % 3 else " i am bad ." for i in range(20)]


def test_sync_and_async_clients_chunk_large_lists_and_keep_order(bert_onnx_bundle: Path) -> None:
    expected = offline(bert_onnx_bundle, list(zip(PROMPTS, REPLIES, strict=True)))
    with running(model=bert_onnx_bundle, max_items_per_request=8) as live:
        with RewardClient(live.url, max_items_per_request=8) as client:
            scores = client.score_pairs(PROMPTS, REPLIES)
            assert live.metric("rewardserve_requests_total", code="200", endpoint="/score") == 3
            best = client.rerank("how are you ?", [" i am bad .", " i am good ."])
            with pytest.raises(RewardServeError) as info:
                RewardClient(live.url, max_items_per_request=9).score(list(zip(PROMPTS, REPLIES, strict=True)))
            assert info.value.status == 413 and info.value.kind == "too_many_items"

        async def go() -> list[float]:
            async with AsyncRewardClient(live.url, max_items_per_request=8, concurrency=3) as client:
                return await client.score([{"prompt": p, "completion": c} for p, c in zip(PROMPTS, REPLIES,
                                                                                            strict=True)])

        async_scores = asyncio.run(go())
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(async_scores, expected, atol=1e-5)
    assert best["best_index"] == 1


def test_client_retries_429_after_the_servers_retry_after(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, max_wait_ms=800, max_queue_items=4, max_items_per_request=4) as live:
        distinct = [{"prompt": "a", "completion": w} for w in ("b", "c", "d", "e")]
        filler = threading.Thread(target=lambda: httpx.post(live.url + "/score", json={"items": distinct}, timeout=30))
        filler.start()
        while live.metric("rewardserve_queue_depth_items") < 4:
            time.sleep(0.01)
        started = time.monotonic()
        with RewardClient(live.url, retry=RetryPolicy(attempts=5)) as client:
            scores = client.score([("a", "z")])
        filler.join()
        assert len(scores) == 1 and np.isfinite(scores[0])
        assert live.metric("rewardserve_rejected_total", reason="overloaded") >= 1
        assert time.monotonic() - started >= 0.9  # it waited Retry-After (1 s), not a tight loop


def test_unreachable_server_raises_after_the_retries() -> None:
    client = RewardClient("http://127.0.0.1:9", retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout_s=2)
    with pytest.raises(RewardServeError) as info:
        client.score([("a", "b")])
    assert info.value.kind == "unreachable"
    with pytest.raises(ValueError, match="2 prompts for 1"):
        client.score_pairs(["a", "b"], ["c"])
