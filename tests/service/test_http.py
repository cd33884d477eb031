"""The real server (uvicorn on 127.0.0.1) over HTTP: every endpoint's schema and values, served scores equal
offline scores, order, batching visible in the metrics, request ids and timing headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rewardmodel import Formatter, load_tokenizer, pairwise_report, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file
from rewardmodel.scoring import score_encoded, score_examples
from rewardmodel.sources import load_examples
from rewardserve.evaluate import evaluate_bundle
from tests.faults import Faulty
from tests.references import offline
from tests.server import Running, running

PAIRS = [("how are you ?", " i am good ."), ("how are you ?", " i am bad ."), ("the sun ?", " one two"),
         ("how are you ?", " i am good .")]


@pytest.fixture(scope="module")
def server(bert_onnx_bundle: Path) -> Iterator[Running]:
    with running(model=bert_onnx_bundle, max_wait_ms=50) as live:
        yield live


def test_score_equals_offline_scores_in_order(server: Running, bert_onnx_bundle: Path) -> None:
    items: list[dict[str, Any]] = [{"prompt": p, "completion": c} for p, c in PAIRS]
    items.append({"messages": [{"role": "user", "content": "how are you ?"},
                               {"role": "assistant", "content": "fine thanks"}]})
    r = httpx.post(server.url + "/score", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = offline(bert_onnx_bundle, [*PAIRS, ([{"role": "user", "content": "how are you ?"}], "fine thanks")])
    np.testing.assert_allclose(body["scores"], expected, atol=1e-5)
    assert body["scores"][0] == body["scores"][3]
    assert body["scores"][0] > body["scores"][1]  # the trained model prefers the POSITIVE word
    assert body["model"] == read_card(bert_onnx_bundle).name and body["normalized"] is False
    assert body["usage"]["truncated_items"] == 0 and body["usage"]["input_tokens"] > 20
    assert r.headers["x-request-id"] and float(r.headers["x-total-time-ms"]) > 0
    assert float(r.headers["x-inference-time-ms"]) > 0


def test_served_scores_equal_rewardserve_eval(server: Running, bert_onnx_bundle: Path,
                                              good_bad_files: tuple[Path, Path]) -> None:
    data = str(good_bad_files[1])
    examples = load_examples(data)
    items = [{"prompt": ex.prompt, "completion": c} for ex in examples for c in ex.completions]
    served = httpx.post(server.url + "/score", json={"items": items}).json()["scores"]
    card = read_card(bert_onnx_bundle)
    formatter = Formatter(load_tokenizer(bert_onnx_bundle), card.formatting)
    scorer = onnx_scorer(open_session(variant_file(bert_onnx_bundle, card, "fp32")))
    reference, lengths, _ = score_examples(scorer, formatter, examples)
    np.testing.assert_allclose(served, [s for row in reference for s in row], atol=1e-5)
    nested = [served[2 * i:2 * i + 2] for i in range(len(examples))]
    report = evaluate_bundle(str(bert_onnx_bundle), data, variant="fp32", progress=False)
    assert pairwise_report(examples, nested, lengths).accuracy == report["accuracy"]
    assert any(not isinstance(ex.prompt, str) for ex in examples)  # chat-message prompts were among them


def test_normalize_uses_the_card(server: Running, bert_onnx_bundle: Path) -> None:
    norm = read_card(bert_onnx_bundle).normalization
    assert norm is not None
    item = {"prompt": PAIRS[0][0], "completion": PAIRS[0][1]}
    raw = httpx.post(server.url + "/score", json={"items": [item]}).json()["scores"][0]
    body = httpx.post(server.url + "/score", json={"items": [item], "normalize": True}).json()
    assert body["normalized"] and body["scores"][0] == pytest.approx((raw - norm.mean) / norm.std, abs=1e-6)
    assert body["raw_scores"] == [raw]
    assert "raw_scores" not in httpx.post(server.url + "/score", json={"items": [item]}).json()


def test_rerank_best_first_scoring_duplicates_once(server: Running, bert_onnx_bundle: Path) -> None:
    candidates = [" i am bad .", " i am good .", " i am bad .", " the rain"]
    before = server.metric("rewardserve_batch_size_items_sum")
    r = httpx.post(server.url + "/rerank", json={"prompt": "how are you ?", "completions": candidates, "top_k": 3})
    body = r.json()
    expected = offline(bert_onnx_bundle, [("how are you ?", c) for c in candidates])
    order = sorted(range(4), key=lambda i: (-expected[i], i))
    assert [x["index"] for x in body["results"]] == order[:3] and body["best_index"] == order[0]
    np.testing.assert_allclose([x["score"] for x in body["results"]], expected[order[:3]], atol=1e-5)
    assert server.metric("rewardserve_batch_size_items_sum") - before == 3  # the duplicate ran once


@pytest.mark.parametrize("max_wait_ms", [0, 50])
def test_concurrent_requests_queued_behind_a_busy_backend_share_one_batch(bert_onnx_bundle: Path,
                                                                         max_wait_ms: int) -> None:
    faulty = Faulty()
    with running(model=bert_onnx_bundle, load=faulty.load, max_wait_ms=max_wait_ms) as live, \
            ThreadPoolExecutor(18) as pool:
        assert live.state.engine is not None
        scheduler = live.state.engine.scheduler
        faulty.release.clear()  # two holders: one batch running, the next formed behind it
        deadline = time.monotonic() + 10
        holders = []
        for k in range(2):
            holders.append(pool.submit(httpx.post, live.url + "/score", json={"items": [
                {"prompt": "q ?", "completion": f"hang {k}"}]}, timeout=30))
            while scheduler.in_system < k + 1 or scheduler.queue_depth:
                assert time.monotonic() < deadline, "the holders did not reach the backend"
                time.sleep(0.01)
        batches = live.metric("rewardserve_batch_size_items_count")
        answers = [pool.submit(httpx.post, live.url + "/score", json={"items": [
            {"prompt": f"q {k} ?", "completion": " good " * (k % 5 + 1)}]}, timeout=30) for k in range(16)]
        while scheduler.queue_depth < 16:
            assert time.monotonic() < deadline, "the 16 requests were not all queued"
            time.sleep(0.01)
        faulty.release.set()
        assert all(a.result().status_code == 200 for a in answers + holders)
        assert live.metric("rewardserve_batch_size_items_count") - batches == 3  # the holders, then all 16 at once
        count = live.metric("rewardserve_batch_size_items_count")  # the warm-up does not count: it is no batch
        assert live.metric("rewardserve_batch_size_items_bucket", le="1.0") == count - 1
        assert live.metric("rewardserve_batch_size_items_bucket", le="8.0") == count - 1  # one batch of 16


def test_identical_items_of_a_score_request_run_once(server: Running, bert_onnx_bundle: Path) -> None:
    items = [{"prompt": "how are you ?", "completion": c} for c in (" i am good .", " i am bad .", " i am good .")]
    before = server.metric("rewardserve_batch_size_items_sum")
    r = httpx.post(server.url + "/score", json={"items": items})
    scores = r.json()["scores"]
    assert scores[0] == scores[2] and len(scores) == 3
    assert server.metric("rewardserve_batch_size_items_sum") - before == 2  # the duplicate was scored once
    assert server.metric("rewardserve_items_total") >= 3  # but counted as sent


def test_adapters_translate_to_the_native_scores(server: Running, bert_onnx_bundle: Path) -> None:
    p, c = PAIRS[0]
    native = offline(bert_onnx_bundle, [(p, c), (p, " i am bad .")])
    # OpenRLHF: the prompt is a prefix of the query -> (prompt, completion); otherwise the text is scored whole
    r = httpx.post(server.url + "/get_reward", json={"query": [p + c, "x y z"], "prompts": [p, "nope"]}).json()
    assert set(r) == {"rewards", "scores", "extra_logs"}
    assert r["rewards"][0] == pytest.approx(native[0], abs=1e-5) and r["rewards"] == r["scores"]
    card = read_card(bert_onnx_bundle)
    whole = Formatter(load_tokenizer(bert_onnx_bundle), card.formatting).encode_text("x y z")
    ref = score_encoded(onnx_scorer(open_session(variant_file(bert_onnx_bundle, card, "fp32"))), card.formatting,
                        [whole])
    assert r["rewards"][1] == pytest.approx(ref[0], abs=1e-5)

    cls = httpx.post(server.url + "/classify", json={"model": "x", "input": ["x y z", "x y z"]}).json()
    assert cls["object"] == "list" and [d["index"] for d in cls["data"]] == [0, 1]
    assert cls["data"][0]["probs"] == pytest.approx([ref[0]], abs=1e-5) and cls["data"][0]["num_classes"] == 1
    assert cls["usage"]["prompt_tokens"] == 2 * len(whole.input_ids)

    for version in ("v1", "v2"):
        body = httpx.post(f"{server.url}/{version}/rerank", json={
            "query": p, "documents": [" i am bad .", {"text": c}], "top_n": 1, "return_documents": True}).json()
        assert body["results"] == [{"index": 1, "relevance_score": pytest.approx(native[0], abs=1e-5),
                                    "document": {"text": c}}]
        assert body["meta"]["api_version"]["version"] == version[1] and body["id"]


def test_probes_models_docs_and_request_ids(server: Running) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    models = httpx.get(server.url + "/v1/models").json()
    info = models["data"][0]
    assert models["object"] == "list" and info["rewardserve"]["backend"] == "onnx"
    assert info["rewardserve"]["limits"]["max_items_per_request"] == 512
    assert "/score" in httpx.get(server.url + "/openapi.json").json()["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200
    r = httpx.get(server.url + "/readyz", headers={"x-request-id": "trainer-7.step-12"})
    assert r.headers["x-request-id"] == "trainer-7.step-12"
    unsafe = httpx.get(server.url + "/readyz", headers={"x-request-id": "bad id;<script>"})
    assert len(unsafe.headers["x-request-id"]) == 32  # replaced, not echoed
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("requests_total", "request_duration_seconds_bucket", "queue_wait_seconds_bucket",
                 "inference_duration_seconds_bucket", "batch_size_items_bucket", "batch_tokens_bucket",
                 "batch_padding_ratio_bucket", "queue_depth_items", "inflight_requests", "items_total",
                 "tokens_total", "truncated_items_total", "model_info"):
        assert f"rewardserve_{name}" in metrics.text, name
    # capacity rejections are exported at 0 before the first one, so alerts read 0 rather than no data
    assert 'rewardserve_rejected_total{reason="overloaded"} 0.0' in metrics.text
    assert server.metric("rewardserve_ready") == 1  # it goes to 0 while draining (tests/service/test_limits.py)


def test_chat_bundle_serves_messages_as_trained(qwen_onnx_bundle: Path) -> None:
    messages = [{"role": "user", "content": "how are you ?"}, {"role": "assistant", "content": "i am good ."},
                {"role": "user", "content": "and the sun ?"}]
    with running(model=qwen_onnx_bundle) as live:
        body = httpx.post(live.url + "/score", json={"items": [
            {"messages": [*messages, {"role": "assistant", "content": "it is fine ."}]},
            {"prompt": messages, "completion": "it is bad ."}]}).json()
    expected = offline(qwen_onnx_bundle, [(messages, "it is fine ."), (messages, "it is bad .")])
    np.testing.assert_allclose(body["scores"], expected, atol=1e-5)


def test_torch_backend_matches_the_checkpoint(trained_bert_bundle: Path) -> None:
    from rewardmodel import pad_batch
    from rewardmodel.torch_model import load_torch_model, torch_scorer

    with running(model=trained_bert_bundle, backend="torch") as live:
        body = httpx.post(live.url + "/score", json={"items": [{"prompt": p, "completion": c} for p, c in PAIRS]})
        info = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]
    model, card = load_torch_model(trained_bert_bundle)
    formatter = Formatter(load_tokenizer(trained_bert_bundle), card.formatting)
    expected = torch_scorer(model)(pad_batch(formatter.encode_many(PAIRS), card.formatting))[:, 0]
    np.testing.assert_allclose(body.json()["scores"], expected, atol=1e-5)
    assert info["backend"] == "torch" and info["runtime"]["detail"] == "attention=sdpa, padded"


def test_get_reward_trains_on_normalized_rewards_and_logs_raw_scores(bert_onnx_bundle: Path) -> None:
    norm = read_card(bert_onnx_bundle).normalization
    assert norm is not None
    p, c = PAIRS[0]
    raw = offline(bert_onnx_bundle, [(p, c)])[0]
    with running(model=bert_onnx_bundle, normalize=True) as live:
        body = httpx.post(live.url + "/get_reward", json={"query": [p + c], "prompts": [p]}).json()
    assert body["scores"][0] == pytest.approx(raw, abs=1e-5)
    assert body["rewards"][0] == pytest.approx((raw - norm.mean) / norm.std, abs=1e-5)
