"""The torch backend packing its batches (--pack): served through a real server, a packed model's scores are its
padded checkpoint's; its batches count real tokens; a model that does not pack, or packs wrong, is refused with
--pack on and served padded otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import rewardmodel.torch_packed
from rewardmodel import read_card
from service.backends.torch_backend import TorchBackend
from service.errors import BackendFailure
from service.settings import ServiceSettings
from tests.server import running

ITEMS = [{"prompt": "how are you ?", "completion": " i am good ." * n} for n in (1, 4, 9, 2)] + [
    {"prompt": "Add 2 and 3.", "completion": "2 + 3 = 5.\n\nSo the answer is 5."}]


def _scores(live: Any) -> dict[str, Any]:
    r = httpx.post(live.url + "/score", json={"items": ITEMS})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("name", ["llama3", "prm", "armorm"])
def test_a_packed_server_scores_as_a_padded_one(zoo: Any, name: str) -> None:
    bundle = zoo.bundle(name)
    common = {"model": bundle, "backend": "torch", "variant": "fp32", "trust_remote_code": zoo[name].remote,
              "max_batch_tokens": 256}
    with running(**common, pack="off") as live:
        padded = _scores(live)
        # five rows padded to the longest (57 tokens) pass 256 tokens: more than one batch
        assert live.metric("rewardserve_batch_padding_ratio_count") > 1
    with running(**common, pack="on") as live:
        about = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]
        assert about["runtime"]["detail"].endswith("packed (padded_sdpa)"), about
        packed = _scores(live)
        # packed, their 189 real tokens are under 256: one batch, no padding computed
        assert live.metric("rewardserve_batch_padding_ratio_count") == 1
        assert live.metric("rewardserve_batch_padding_ratio_sum") == 0
        assert live.metric("rewardserve_batch_tokens_sum") == packed["usage"]["input_tokens"]
    np.testing.assert_allclose(packed["scores"], padded["scores"], rtol=1e-4, atol=1e-5)
    for key in ("outputs", "steps"):
        if key in padded:
            np.testing.assert_allclose(np.asarray(packed[key], dtype=float), np.asarray(padded[key], dtype=float),
                                       rtol=1e-4, atol=1e-5)


def test_auto_packs_on_cuda_only_and_on_refuses_a_model_that_does_not_pack(zoo: Any,
                                                                            trained_bert_bundle: Path) -> None:
    card = read_card(trained_bert_bundle)
    assert not TorchBackend(trained_bert_bundle, card, "fp32", "cpu", pack="auto").packs
    assert "padded" in TorchBackend(trained_bert_bundle, card, "fp32", "cpu", pack="off").info.detail
    deberta = zoo.bundle("deberta")
    with pytest.raises(BackendFailure, match=r"does not pack: .*attention interface.*--pack off"):
        TorchBackend(deberta, read_card(deberta), "fp32", "cpu", pack="on")


def _leaky(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int, causal: bool,
           scale: float | None) -> torch.Tensor:
    """A kernel with the bug packing must never ship: every token attends to every item."""
    return torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), scale=scale).transpose(0, 1)


def test_a_model_that_packs_wrong_is_refused_by_its_probes(trained_bert_bundle: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rewardmodel.torch_packed, "padded_sdpa", _leaky)
    with pytest.raises(BackendFailure, match="packed scores differ from its padded ones"):
        TorchBackend(trained_bert_bundle, read_card(trained_bert_bundle), "fp32", "cpu", pack="on")


def test_pack_on_needs_the_torch_backend() -> None:
    with pytest.raises(ValueError, match="pack=on packs the torch backend"):
        ServiceSettings(backend="onnx", pack="on")
    assert ServiceSettings(backend="torch", pack="on").pack == "on"
