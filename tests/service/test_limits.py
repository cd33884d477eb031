"""Limits and failures over real HTTP: 400/401/413/422/429/503/504, the JSON error shape, no NaN ever."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from rewardmodel import read_card, write_card
from tests.server import error_of, running

ITEM = {"prompt": "how are you ?", "completion": " i am good ."}


def test_bad_input_is_a_clear_4xx(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, max_items_per_request=4, max_request_tokens=40, max_body_bytes=2048,
                 max_item_tokens=12) as live:
        post = lambda path, **kw: httpx.post(live.url + path, **kw)  # noqa: E731
        error_of(post("/score", json={"items": []}), 400, "invalid_request")
        assert "at character 11" in error_of(post("/score", content=b'{"items": [', headers={
            "content-type": "application/json"}), 400, "invalid_json")
        for plain in ({"content-type": "text/plain"}, {}):  # JSON sent as something else: say to send JSON
            assert "Content-Type: application/json" in error_of(post("/score", content=json.dumps(
                {"items": [ITEM]}).encode(), headers=plain), 400, "invalid_json")
        assert "assistant" in error_of(post("/score", json={"items": [{"messages": [
            {"role": "user", "content": "hi"}]}]}), 400, "invalid_input")
        error_of(post("/score", json={"items": [{"prompt": 3, "completion": "x"}]}), 422, "validation_error")
        error_of(post("/score", json={"items": [{"prompt": "x"}]}), 422, "validation_error")
        error_of(post("/rerank", json={"prompt": "x", "completions": ["a"], "top_k": 0}), 422, "validation_error")
        assert "4" in error_of(post("/score", json={"items": [ITEM] * 5}), 413, "too_many_items")
        long_item = {"prompt": "how are you ?", "completion": " good" * 40}
        body = post("/score", json={"items": [long_item, ITEM]}).json()
        assert body["usage"]["truncated_items"] == 1 and body["usage"]["input_tokens"] <= 24
        error_of(post("/score", json={"items": [long_item] * 4}), 413, "too_many_tokens")
        big = {"items": [{"prompt": "x" * 3000, "completion": "y"}]}
        error_of(post("/score", json=big), 413, "payload_too_large")

        def chunks():  # no Content-Length: the limit still holds
            yield b'{"items": [{"prompt": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'", "completion": "y"}]}'

        error_of(post("/score", content=chunks(), headers={"content-type": "application/json"}),
                 413, "payload_too_large")
        error_of(httpx.get(live.url + "/nowhere"), 404, "not_found")
        error_of(httpx.get(live.url + "/score"), 405, "method_not_allowed")
        # a lone surrogate escape is valid JSON and no text: refused where it is, before it reaches a tokenizer
        for path, payload, where in (("/score", {"items": [{"prompt": "q \ud800", "completion": "a"}]},
                                      "body.items.0.prompt"),
                                     ("/v1/rerank", {"query": "q", "documents": ["a", "\udc00 b"]}, "body.documents.1"),
                                     ("/get_reward", {"query": ["\ud83d"]}, "body.query.0")):
            raw = json.dumps(payload).encode()  # ASCII: the surrogate travels as its escape
            assert where in error_of(post(path, content=raw, headers={"content-type": "application/json"}), 400,
                                     "invalid_json")
        emoji = json.dumps({"items": [{"prompt": "\U0001f600 ?", "completion": "a \\ud800"}]}).encode()
        assert post("/score", content=emoji, headers={"content-type": "application/json"}).status_code == 200
        assert post("/score", json={"items": [ITEM]}).status_code == 200  # the server is unharmed
        assert live.metric("rewardserve_truncated_items_total") == 1
        assert live.metric("rewardserve_rejected_total", reason="too_many_items") == 1
        assert live.metric("rewardserve_rejected_total", reason="payload_too_large") == 2


def test_api_keys_guard_scoring_but_not_probes(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, api_keys="s3cret, other") as live:
        r = httpx.post(live.url + "/score", json={"items": [ITEM]})
        error_of(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer s3cre"}
        error_of(httpx.post(live.url + "/get_reward", json={"query": ["x"]}, headers=wrong), 401, "unauthorized")
        error_of(httpx.get(live.url + "/v1/models", headers={"Authorization": "s3cret"}), 401, "unauthorized")
        for key in ("s3cret", "other"):
            ok = httpx.post(live.url + "/score", json={"items": [ITEM]}, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(live.url + probe).status_code == 200


def test_overload_is_429_with_retry_after_and_spares_admitted_work(bert_onnx_bundle: Path) -> None:
    # max_wait keeps the first request's items queued long enough to fill the system deterministically
    with running(model=bert_onnx_bundle, max_wait_ms=1500, max_queue_items=4, max_items_per_request=4) as live:
        first: list[httpx.Response] = []
        distinct = [{"prompt": "a", "completion": word} for word in ("b", "c", "d", "e")]
        t = threading.Thread(target=lambda: first.append(httpx.post(live.url + "/score", json={"items": distinct},
                                                                    timeout=30)))
        t.start()
        deadline = time.monotonic() + 10
        while live.metric("rewardserve_queue_depth_items") < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(live.url + "/score", json={"items": [{"prompt": "c", "completion": "d"}]})
        error_of(r, 429, "overloaded")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        t.join()
        assert first[0].status_code == 200 and len(first[0].json()["scores"]) == 4
        assert live.metric("rewardserve_rejected_total", reason="overloaded") == 1


def test_deadline_passed_in_the_queue_is_504(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, max_wait_ms=2000, request_timeout_s=0.3) as live:
        started = time.monotonic()
        error_of(httpx.post(live.url + "/score", json={"items": [ITEM]}), 504, "deadline_exceeded")
        assert time.monotonic() - started < 1.5
        assert live.metric("rewardserve_rejected_total", reason="deadline_exceeded") == 1
        assert live.metric("rewardserve_batch_size_items_count") == 0  # the expired item never ran


def test_not_ready_and_draining_are_503(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, variant="fp16") as broken:  # the bundle has no fp16 export
        assert "fp16" in error_of(httpx.get(broken.url + "/healthz"), 503, "load_failed")
        error_of(httpx.get(broken.url + "/readyz"), 503, "load_failed")
        r = httpx.post(broken.url + "/score", json={"items": [ITEM]})
        assert "rewardserve export" in error_of(r, 503, "load_failed") and r.headers["retry-after"] == "1"
    with running(model=bert_onnx_bundle) as live:
        assert live.metric("rewardserve_ready") == 1
        live.state.begin_drain()  # what SIGTERM does first: /readyz and the gauge both say not ready
        assert live.metric("rewardserve_ready") == 0
        error_of(httpx.get(live.url + "/readyz"), 503, "draining")
        error_of(httpx.post(live.url + "/score", json={"items": [ITEM]}), 503, "draining")
        assert httpx.get(live.url + "/healthz").status_code == 200


@pytest.fixture(scope="module")
def nan_bundle(tmp_path_factory: pytest.TempPathFactory, trained_bert_bundle: Path) -> Path:
    """The tiny BERT with a NaN in its score head: a broken checkpoint a server must not pass on."""
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("nan") / "bundle"
    shutil.copytree(trained_bert_bundle, root)
    weights = load_file(root / "model.safetensors")
    weights["classifier.bias"] = torch.full_like(weights["classifier.bias"], float("nan"))
    save_file(weights, root / "model.safetensors", metadata={"format": "pt"})
    write_card(root, read_card(root, verify=False))
    return root


def test_nan_scores_never_leave_the_service(nan_bundle: Path) -> None:
    with running(model=nan_bundle, backend="torch") as live:
        r = httpx.post(live.url + "/score", json={"items": [ITEM]})
        assert "non-finite" in error_of(r, 500, "backend_error")
        assert "NaN" not in r.text.replace("(NaN/inf)", "")
        assert httpx.get(live.url + "/healthz").status_code == 200


def test_a_client_that_disconnects_has_its_items_dropped(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, max_wait_ms=1000) as live:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(live.url + "/score", json={"items": [ITEM]}, timeout=0.3)
        deadline = time.monotonic() + 5
        while live.metric("rewardserve_requests_total", code="499", endpoint="/score") < 1:
            assert time.monotonic() < deadline, "the disconnect was not noticed"
            time.sleep(0.02)
        assert live.metric("rewardserve_queue_depth_items") == 0
        # had the dropped item stayed queued, it would share the next request's batch (max_wait fills batches)
        other = {"prompt": "the sun ?", "completion": " one two"}
        assert httpx.post(live.url + "/score", json={"items": [other]}, timeout=30).status_code == 200
        assert live.metric("rewardserve_batch_size_items_count") == 1
        assert live.metric("rewardserve_batch_size_items_sum") == 1
