"""The RL and chat ecosystem's own clients against a live rewardserve: OpenRLHF's reward fetcher, verl's
classify protocol, and the cohere SDK."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import require_module
from tests.server import running

PROMPTS = ["how are you ?", "the sun ?", "one two ?", "good day ?", "how are you ?"]
REPLIES = [" i am good .", " it is bad .", " one", " the rain", " i am fine ."]


def native_scores(url: str, prompts: list[str], replies: list[str]) -> list[float]:
    items = [{"prompt": p, "completion": r} for p, r in zip(prompts, replies, strict=True)]
    return list(httpx.post(url + "/score", json={"items": items}).json()["scores"])


def test_openrlhf_shards_rollouts_across_several_reward_servers(bert_onnx_bundle: Path) -> None:
    agent = require_module("openrlhf.utils.agent", "pip install --no-deps openrlhf (tests/full.sh does)")  # its fetcher
    with running(model=bert_onnx_bundle) as a, running(model=bert_onnx_bundle) as b:
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=[a.url + "/get_reward", b.url + "/get_reward"])
        queries = [p + r for p, r in zip(PROMPTS, REPLIES, strict=True)]
        answers = asyncio.run(executor._fetch_rewards_via_http(queries, PROMPTS, [None] * len(PROMPTS)))
        rewards = [x for answer in answers for x in answer["rewards"]]
        np.testing.assert_allclose(rewards, native_scores(a.url, PROMPTS, REPLIES), atol=1e-5)
        assert all(answer["scores"] == answer["rewards"] and answer["extra_logs"] == {} for answer in answers)
        for server in (a, b):  # each server got its shard
            assert server.metric("rewardserve_requests_total", code="200", endpoint="/get_reward") == 1


def test_verl_classify_protocol(qwen_onnx_bundle: Path) -> None:
    """verl's reward loop renders the conversation with the reward model's chat template, posts the text
    with activation off, and reads the score at ``data[-1]["probs"][-1]``: it must equal the native score
    of the same conversation."""
    from rewardmodel import Formatter, load_tokenizer, read_card

    formatter = Formatter(load_tokenizer(qwen_onnx_bundle), read_card(qwen_onnx_bundle).formatting)
    with running(model=qwen_onnx_bundle) as live:
        for prompt, reply in zip(PROMPTS[:3], REPLIES[:3], strict=True):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply.strip()}]
            rendered = "".join(formatter.texts(messages[:1], messages[1]["content"]))
            payload = {"model": str(qwen_onnx_bundle), "input": rendered, "activation": False,
                       "add_special_tokens": False}
            out = httpx.post(live.url + "/classify", json=payload).json()
            native = httpx.post(live.url + "/score", json={"items": [{"messages": messages}]}).json()["scores"][0]
            assert out["data"][-1]["probs"][-1] == pytest.approx(native, abs=1e-5)
        for text in ("x", rendered):
            raw = httpx.post(live.url + "/classify", json={"input": text}).json()["data"][0]["probs"][0]
            prob = httpx.post(live.url + "/classify", json={"input": text, "activation": True}).json()
            assert prob["data"][0]["probs"][0] == pytest.approx(1 / (1 + math.exp(-raw)), abs=1e-9)


def test_cohere_sdk_reranks_through_v2(bert_onnx_bundle: Path) -> None:
    cohere = require_module("cohere", "pip install -e '.[dev]'")
    with running(model=bert_onnx_bundle, api_keys="co-key") as live:
        client = cohere.ClientV2(api_key="co-key", base_url=live.url)
        documents = [" it is bad .", " i am good .", " the rain"]
        response = client.rerank(model="rewardserve", query="how are you ?", documents=documents, top_n=2)
        with httpx.Client(base_url=live.url, headers={"Authorization": "Bearer co-key"}) as http:
            scores = http.post("/score", json={"items": [{"prompt": "how are you ?", "completion": d}
                                                        for d in documents]}).json()["scores"]
    order = sorted(range(3), key=lambda i: -scores[i])[:2]
    assert [r.index for r in response.results] == order
    assert [r.relevance_score for r in response.results] == pytest.approx([scores[i] for i in order], abs=1e-5)
