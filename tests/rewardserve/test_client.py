"""The Python client against the real server: chunking, order, retries honouring Retry-After, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardserve.client import AsyncRewardClient, RetryPolicy, RewardClient, RewardServeError
from tests.references import offline
from tests.server import running

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
        deadline = time.monotonic() + 10
        while live.metric("rewardserve_queue_depth_items") < 4:
            assert time.monotonic() < deadline, "the filler request was never queued"
            time.sleep(0.01)
        started = time.monotonic()
        # its own backoff is ~1 ms: five tries of that would all meet the full queue and fail; only waiting
        # the server's Retry-After (1 s) gets past the filler's 0.8 s in the queue
        with RewardClient(live.url, retry=RetryPolicy(attempts=5, backoff_s=0.001)) as client:
            scores = client.score([("a", "z")])
        filler.join()
        assert len(scores) == 1 and np.isfinite(scores[0])
        assert live.metric("rewardserve_rejected_total", reason="overloaded") >= 1
        assert time.monotonic() - started >= 0.9


class Flaky:
    """A stand-in for a load balancer in front of the real server: it answers each status of ``script`` once
    (502, 503, 504 with no Retry-After, as proxies do), then forwards requests to ``upstream``."""

    def __init__(self, upstream: str, script: list[int]) -> None:
        self.script = list(script)
        self.seen_auth: list[str] = []
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                flaky.seen_auth.append(self.headers.get("authorization", ""))
                if flaky.script:
                    status, payload = flaky.script.pop(0), b"upstream trouble"
                else:
                    forwarded = httpx.post(upstream + self.path, content=body, timeout=30, headers={
                        "content-type": "application/json", "authorization": self.headers.get("authorization", "")})
                    status, payload = forwarded.status_code, forwarded.content
                self.send_response(status)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_sync_and_async_clients_retry_502_503_504_and_send_the_api_key(bert_onnx_bundle: Path) -> None:
    expected = offline(bert_onnx_bundle, [("how are you ?", " i am good .")])
    with running(model=bert_onnx_bundle, api_keys="k1") as live:
        policy = RetryPolicy(attempts=4, backoff_s=0.01)
        sync_proxy = Flaky(live.url, [502, 503, 504])
        with RewardClient(sync_proxy.url, api_key="k1", retry=policy) as client:
            np.testing.assert_allclose(client.score([("how are you ?", " i am good .")]), expected, atol=1e-5)
        assert sync_proxy.seen_auth == ["Bearer k1"] * 4

        async_proxy = Flaky(live.url, [504, 503, 502])

        async def go() -> list[float]:
            async with AsyncRewardClient(async_proxy.url, api_key="k1", retry=policy) as client:
                return await client.score([{"prompt": "how are you ?", "completion": " i am good ."}])

        np.testing.assert_allclose(asyncio.run(go()), expected, atol=1e-5)
        assert async_proxy.seen_auth == ["Bearer k1"] * 4

        out_of_tries = Flaky(live.url, [503] * 4)
        with pytest.raises(RewardServeError) as info, RewardClient(out_of_tries.url, api_key="k1",
                                                                   retry=policy) as client:
            client.score([("a", "b")])
        assert info.value.status == 503 and len(out_of_tries.seen_auth) == 4
        with pytest.raises(RewardServeError) as info, RewardClient(live.url, api_key="wrong", retry=policy) as client:
            client.score([("a", "b")])
        assert info.value.status == 401  # not retried: a wrong key stays wrong


def test_unreachable_server_raises_after_the_retries() -> None:
    client = RewardClient("http://127.0.0.1:9", retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout_s=2)
    with pytest.raises(RewardServeError) as info:
        client.score([("a", "b")])
    assert info.value.kind == "unreachable" and info.value.status is None
    assert str(info.value).startswith("unreachable: no answer after 2 attempts (ConnectError")
    with pytest.raises(ValueError, match="2 prompts for 1"):
        client.score_pairs(["a", "b"], ["c"])
