"""The HTTP layer around every request (service/middleware.py, service/plumbing.py): the last-resort 500,
request ids, API keys on every scoring endpoint, and the guards of the operational endpoints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardmodel import BundleCard
from service.backends import load_backend
from service.settings import ServiceSettings
from tests.server import error_of, running

ITEM = {"prompt": "how are you ?", "completion": " i am good ."}
SCORING: dict[str, dict[str, Any]] = {
    "/score": {"items": [ITEM]},
    "/rerank": {"prompt": "q", "completions": ["a", "b"]},
    "/get_reward": {"query": ["how are you ? i am good ."]},
    "/classify": {"input": "how are you ?"},
    "/v1/rerank": {"query": "q", "documents": ["a"]},
    "/v2/rerank": {"query": "q", "documents": [{"text": "a"}]},
}


class Broken:
    """The real backend, whose description raises once it is served: a bug in a route's path."""

    def __init__(self, root: Path, card: BundleCard, settings: ServiceSettings) -> None:
        self._real = load_backend(root, card, settings)
        self.score, self.health, self.close = self._real.score, self._real.health, self._real.close
        self.streams, self.pad_multiple, self.packs = self._real.streams, self._real.pad_multiple, self._real.packs
        self.serving = False

    @property
    def info(self) -> Any:
        if self.serving:
            raise KeyError("planted bug")
        return self._real.info


def test_a_bug_is_a_500_internal_error_naming_the_request_id(bert_onnx_bundle: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="service"), running(model=bert_onnx_bundle, load=Broken) as live:  # type: ignore[arg-type]
        backend = live.state.backend
        assert isinstance(backend, Broken)
        backend.serving = True
        r = httpx.get(live.url + "/v1/models", headers={"x-request-id": "trace-42"})
        message = error_of(r, 500, "internal_error")
        assert "trace-42" in message and r.headers["x-request-id"] == "trace-42"
        assert "planted bug" not in r.text  # the details go to the log, not to the client
        assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200  # still serving
        assert live.metric("rewardserve_requests_total", endpoint="/v1/models", code="500") == 1
    assert any("trace-42" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_every_scoring_endpoint_requires_the_key(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, api_keys="k1") as live:
        for path, body in SCORING.items():
            error_of(httpx.post(live.url + path, json=body), 401, "unauthorized")
            error_of(httpx.post(live.url + path, json=body, headers={"Authorization": "Bearer k2"}), 401,
                     "unauthorized")
            ok = httpx.post(live.url + path, json=body, headers={"Authorization": "Bearer k1"})
            assert ok.status_code == 200, (path, ok.text)
        error_of(httpx.get(live.url + "/v1/models"), 401, "unauthorized")


@pytest.mark.parametrize("guarded", ["protect_metrics", "protect_health"])
def test_each_guard_protects_its_own_endpoints_only(bert_onnx_bundle: Path, guarded: str) -> None:
    flags: dict[str, Any] = {guarded: True}
    with running(model=bert_onnx_bundle, api_keys="k1", **flags) as live:
        protected = {"/metrics"} if guarded == "protect_metrics" else {"/healthz", "/readyz"}
        for path in ("/metrics", "/healthz", "/readyz"):
            if path in protected:
                error_of(httpx.get(live.url + path), 401, "unauthorized")
                assert httpx.get(live.url + path, headers={"Authorization": "Bearer k1"}).status_code == 200
            else:
                assert httpx.get(live.url + path).status_code == 200, path
