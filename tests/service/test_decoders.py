"""Decoder reward models served end to end: Llama (concat template, left padding, an added pad token) and
Qwen (ChatML, right padding) through both backends, with truncation and the OpenRLHF adapter; served
int8 against offline int8; fp16 on the torch backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.scoring import score_encoded
from rewardmodel.torch_model import load_torch_model, torch_scorer
from tests.references import offline
from tests.server import running

PAIRS = [("how are you ?", " i am good ."), ("how are you ?", " i am bad ."), ("the sun ?", " one two three")]
LONG = ("how are you ?", " it is" + " a red cat" * 40 + " .")  # far past the tiny models' 64 tokens


def _checkpoint_scores(bundle: Path, inputs: list[tuple[Any, str]]) -> np.ndarray:
    """What the torch checkpoint scores for ``inputs`` under the card's formatting (truncation included)."""
    card = read_card(bundle)
    model, _ = load_torch_model(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    return score_encoded(torch_scorer(model), card.formatting, formatter.encode_many(inputs))


@pytest.mark.parametrize(("bundle_name", "backend"), [("llama_onnx_bundle", "onnx"), ("qwen_onnx_bundle", "onnx"),
                                                       ("qwen_onnx_bundle", "torch"), ("llama_onnx_bundle", "torch")])
def test_decoders_serve_the_checkpoints_scores(bundle_name: str, backend: str, request: pytest.FixtureRequest) -> None:
    bundle: Path = request.getfixturevalue(bundle_name)
    card = read_card(bundle)
    assert card.formatting.score_position == "last"
    inputs = [*PAIRS, LONG]
    expected = _checkpoint_scores(bundle, inputs)
    with running(model=bundle, backend=backend) as live:
        r = httpx.post(live.url + "/score", json={"items": [{"prompt": p, "completion": c} for p, c in inputs]})
        assert r.status_code == 200, r.text
        body = r.json()
        np.testing.assert_allclose(body["scores"], expected, atol=1e-4)
        assert body["usage"]["truncated_items"] == 1  # the long one was cut by the card's policy, and counted
        # OpenRLHF sends the decoded prompt+response and the prompt: the same scores
        rewards = httpx.post(live.url + "/get_reward", json={"query": [p + c for p, c in PAIRS],
                                                              "prompts": [p for p, _ in PAIRS]}).json()
        np.testing.assert_allclose(rewards["scores"], expected[:3], atol=1e-4)


def test_the_padding_side_of_a_left_padded_decoder_is_kept(llama_onnx_bundle: Path) -> None:
    spec = read_card(llama_onnx_bundle).formatting
    assert spec.padding_side == "left" and spec.pad_token is not None
    assert spec.pad_token.token not in (spec.eos_token.token if spec.eos_token else None, None)


def test_served_int8_equals_offline_int8(bert_onnx_bundle: Path) -> None:
    items = [("how are you ?", " i am good ."), ("the cat ?", " it is a bad dog ."), ("q ?", " one two three four")]
    with running(model=bert_onnx_bundle, variant="int8") as live:
        served = httpx.post(live.url + "/score", json={"items": [{"prompt": p, "completion": c} for p, c in items]})
    expected = offline(bert_onnx_bundle, items, variant="int8")
    np.testing.assert_allclose(served.json()["scores"], expected, atol=1e-5)  # same batch, same quantization
    assert not np.allclose(expected, offline(bert_onnx_bundle, items), atol=1e-6)  # and it is int8, not fp32


def test_fp16_on_the_torch_backend(bert_onnx_bundle: Path) -> None:
    import torch

    probe = torch.ones(4, 4, dtype=torch.float16)
    try:
        probe @ probe
    except RuntimeError:
        pytest.skip("this CPU's torch build has no fp16 matmul")
    with running(model=bert_onnx_bundle, backend="torch", variant="fp16") as live:
        r = httpx.post(live.url + "/score", json={"items": [{"prompt": p, "completion": c} for p, c in PAIRS]})
        assert r.status_code == 200, r.text
        info = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]["runtime"]
    assert info["dtype"] == "float16"
    np.testing.assert_allclose(r.json()["scores"], offline(bert_onnx_bundle, PAIRS), atol=5e-2)
