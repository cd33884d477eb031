"""A criteria bundle end to end: exported with every criterion through the parity gate, served over HTTP
(onnx and torch) with per-criterion scores equal to the offline ones, the reward their weighted sum, a
request's own weights, the adapters' scalar, and 4xx for what a request gets wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.scoring import outputs_encoded
from rewardmodel.torch_model import load_torch_model, torch_scorer
from tests.server import Running, running

ITEMS = [("how are you ?", "it is good ."), ("how are you ?", "it is bad ,"), ("the cat ?", "hello the tea ,"),
         ("the cat ?", "rain is it .")]


def offline(bundle: Path) -> np.ndarray:
    """(items, criteria) outputs of the torch checkpoint: the reference everything served must equal."""
    model, card = load_torch_model(bundle)
    encoded = Formatter(load_tokenizer(bundle), card.formatting).encode_many(ITEMS)
    return outputs_encoded(torch_scorer(model), card.formatting, encoded, width=2)


def body(**extra: object) -> dict[str, object]:
    return {"items": [{"prompt": p, "completion": c} for p, c in ITEMS], **extra}


def test_every_criterion_passes_the_parity_gate(criteria_onnx_bundle: Path) -> None:
    card = read_card(criteria_onnx_bundle)
    assert card.criteria is not None and card.criteria.names == ("complete", "polite")
    for variant in ("fp32", "int8"):
        record = card.onnx[variant]
        assert record["parity_passed"] and set(record["criteria_parity"]) == {"complete", "polite"}
        for figures in record["criteria_parity"].values():
            assert figures["pairs"] > 0 and figures["pair_agreement"] >= 0.98
    assert card.onnx["fp32"]["criteria_parity"]["polite"]["max_abs_diff"] <= 1e-4


@pytest.fixture(scope="module", params=[{"backend": "onnx", "variant": "fp32"}, {"backend": "torch"}],
                ids=["onnx", "torch"])
def server(request: pytest.FixtureRequest, criteria_onnx_bundle: Path) -> Iterator[Running]:
    with running(model=criteria_onnx_bundle, max_wait_ms=20, **request.param) as live:
        yield live


def test_served_criteria_equal_the_offline_outputs(server: Running, criteria_onnx_bundle: Path) -> None:
    reference = offline(criteria_onnx_bundle)
    answer = httpx.post(server.url + "/score", json=body(criteria=True)).json()
    served = np.asarray([[item["complete"], item["polite"]] for item in answer["criteria"]])
    np.testing.assert_allclose(served, reference, atol=1e-4)
    np.testing.assert_allclose(answer["scores"], reference @ [0.3, 0.7], atol=1e-4)  # the card's weights
    assert "criteria" not in httpx.post(server.url + "/score", json=body()).json()  # only when asked

    own = httpx.post(server.url + "/score", json=body(weights={"complete": 1.0}, normalize=False)).json()
    np.testing.assert_allclose(own["scores"], reference @ [1.0, 0.7], atol=1e-4)  # polite keeps the card's 0.7

    ranked = httpx.post(server.url + "/rerank", json={"prompt": "how are you ?", "criteria": True,
                                                      "completions": [c for _, c in ITEMS[:2]]}).json()
    by_index = {r["index"]: r for r in ranked["results"]}
    np.testing.assert_allclose([by_index[i]["criteria"]["polite"] for i in (0, 1)], reference[:2, 1], atol=1e-4)

    # the adapters keep returning the scalar
    reward = httpx.post(server.url + "/get_reward", json={"query": [p + " " + c for p, c in ITEMS[:1]],
                                                         "prompts": [ITEMS[0][0] + " "]}).json()
    np.testing.assert_allclose(reward["scores"], reference[:1] @ [0.3, 0.7], atol=1e-4)


@pytest.mark.parametrize(("extra", "status", "kind"), [
    ({"weights": {"kindness": 1.0}}, 400, "invalid_weights"),
    ({"weights": {"polite": 1.0}, "normalize": True}, 400, "invalid_weights"),
    ({"weights": {"polite": "much"}}, 422, "validation_error"),
    ({"weights": {"polite": True}}, 422, "validation_error"),
    ({"weights": {"polite": "0.5"}}, 422, "validation_error"),
    ({"weights": ["polite"]}, 422, "validation_error"),
    ({"criteria": "yes please"}, 422, "validation_error"),
])
def test_bad_weights_are_4xx_and_harm_no_one(server: Running, extra: dict[str, object], status: int,
                                             kind: str) -> None:
    answer = httpx.post(server.url + "/score", json=body(**extra))
    assert answer.status_code == status and answer.json()["error"]["type"] == kind, answer.text
    assert httpx.post(server.url + "/score", json=body()).status_code == 200


def test_non_finite_weights_are_refused(server: Running) -> None:
    # Python's JSON parser reads the NaN literal that other encoders write; the engine refuses it
    raw = json.dumps(body(normalize=False)).replace('"normalize": false', '"normalize": false, "weights": '
                                                                           '{"polite": NaN}')
    answer = httpx.post(server.url + "/score", content=raw, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == {
        "type": "invalid_weights", "message": "weights.polite must be a finite number, got nan"}


def test_a_scalar_bundle_has_no_criteria(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle) as live:
        for extra in ({"criteria": True}, {"weights": {"polite": 1.0}}):
            answer = httpx.post(live.url + "/score", json=body(**extra))
            assert answer.status_code == 400 and answer.json()["error"]["type"] == "no_criteria", answer.text
