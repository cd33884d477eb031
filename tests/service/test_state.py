"""The service's lifecycle and defaults (service/state.py): readiness while loading, normalization defaults."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardmodel import BundleCard, read_card, write_card
from service.backends import Backend, load_backend
from service.settings import ServiceSettings
from tests.server import error_of, running

ITEM = {"prompt": "how are you ?", "completion": " i am good ."}
TEXT = "how are you ? i am good ."


def test_readyz_is_503_while_healthz_is_200_during_loading(bert_onnx_bundle: Path) -> None:
    loaded = threading.Event()

    def slow_load(root: Path, card: BundleCard, settings: ServiceSettings) -> Backend:
        assert loaded.wait(30), "the test never let loading finish"
        return load_backend(root, card, settings)

    with running(wait_ready=False, model=bert_onnx_bundle, load=slow_load) as live:
        assert httpx.get(live.url + "/healthz").status_code == 200
        error_of(httpx.get(live.url + "/readyz"), 503, "not_ready")
        assert "loading" in error_of(httpx.post(live.url + "/score", json={"items": [ITEM]}), 503, "not_ready")
        assert live.metric("rewardserve_ready") == 0
        loaded.set()
        for _ in range(500):
            if httpx.get(live.url + "/readyz").status_code == 200:
                break
            threading.Event().wait(0.02)
        assert httpx.get(live.url + "/readyz").status_code == 200 and live.metric("rewardserve_ready") == 1
        assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200


def _normalized(scores: list[float], raw: list[float], bundle: Path) -> bool:
    norm = read_card(bundle).normalization
    assert norm is not None
    return scores == pytest.approx([(r - norm.mean) / norm.std for r in raw], abs=1e-6)


@pytest.mark.parametrize("default", [True, False])
def test_the_server_default_normalize_holds_on_every_endpoint_and_a_request_overrides_it(bert_onnx_bundle: Path,
                                                                                        default: bool) -> None:
    with running(model=bert_onnx_bundle, normalize=default) as live:
        raw = httpx.post(live.url + "/score", json={"items": [ITEM], "normalize": False}).json()["scores"]
        calls: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], list[float]]]] = {
            "/score": ({"items": [ITEM]}, lambda b: b["scores"]),
            "/rerank": ({"prompt": ITEM["prompt"], "completions": [ITEM["completion"]]},
                        lambda b: [b["results"][0]["score"]]),
            "/classify": ({"input": TEXT}, lambda b: [b["data"][0]["probs"][0]]),
            "/v1/rerank": ({"query": ITEM["prompt"], "documents": [ITEM["completion"]]},
                           lambda b: [b["results"][0]["relevance_score"]]),
            "/v2/rerank": ({"query": ITEM["prompt"], "documents": [ITEM["completion"]]},
                           lambda b: [b["results"][0]["relevance_score"]]),
        }
        # /classify scores a whole text; /get_reward's "scores" are always raw, so they give its raw reward
        whole = httpx.post(live.url + "/get_reward", json={"query": [TEXT]}).json()["scores"]
        for path, (body, read) in calls.items():
            r = httpx.post(live.url + path, json=body)
            assert r.status_code == 200, (path, r.text)
            expected_raw = whole if path == "/classify" else raw
            assert _normalized(read(r.json()), expected_raw, bert_onnx_bundle) is default, path
        for override in (True, False):  # a request that says overrides the server's default
            for path in ("/score", "/rerank"):
                body, read = calls[path]
                got = read(httpx.post(live.url + path, json={**body, "normalize": override}).json())
                assert _normalized(got, raw, bert_onnx_bundle) is override, (path, override)


def test_normalize_asked_of_a_card_without_normalization_is_a_400(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    import shutil
    from dataclasses import replace

    bare = tmp_path / "bare"
    shutil.copytree(bert_onnx_bundle, bare)
    write_card(bare, replace(read_card(bare), normalization=None))
    with running(model=bare) as live:
        r = httpx.post(live.url + "/score", json={"items": [ITEM], "normalize": True})
        assert "no normalization" in error_of(r, 400, "invalid_request")
        assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200
