"""The int8-static variant (NNCF, calibrated) and the openvino backend: what the export records, what a real
server answers with it, and that a static-int8 score does not move with its batch neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from export.run import FILES
from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file
from rewardmodel.openvino_model import compile_onnx, openvino_scorer
from rewardmodel.scoring import score_encoded
from service.settings import ServiceSettings
from tests.server import running

ITEMS = [("how are you ?", " i am good ."), ("how are you ?", " i am bad ."), ("the sun ?", " one two"),
         ("a much longer prompt that pads the others in its batch , and then some more words", " ok"),
         ("how are you ?", " i am fine , thank you , and you ?")]


def openvino_offline(bundle: Path, variant: str, items: list[tuple[str, str]]) -> np.ndarray:
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    return score_encoded(openvino_scorer(compile_onnx(variant_file(bundle, card, variant))), card.formatting,
                         formatter.encode_many(items))  # type: ignore[arg-type]


def test_export_records_a_calibrated_int8_graph_gated_on_openvino(bert_onnx_bundle: Path) -> None:
    record = read_card(bert_onnx_bundle).onnx["int8-static"]
    assert record["file"] == FILES["int8-static"] and record["parity_passed"], record
    assert record["providers_checked"] == ["OpenVINO CPU (f32)"]
    assert "NNCF" in record["conversion"] and "calibrated on" in record["conversion"]
    assert record["dtype"] == "int8 weights and activations (static, calibrated)"
    ops = {n.op_type for n in onnx.load(str(bert_onnx_bundle / record["file"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # activations are quantized too, not only weights


def test_a_static_int8_score_does_not_move_with_its_batch(bert_onnx_bundle: Path) -> None:
    """Dynamic int8 measures each batch's activation range, so an item's score moves with its neighbours;
    static int8's ranges are fixed at export."""
    card = read_card(bundle := bert_onnx_bundle)
    encoded = Formatter(load_tokenizer(bundle), card.formatting).encode_many(ITEMS)
    static = openvino_scorer(compile_onnx(variant_file(bundle, card, "int8-static")))
    dynamic = onnx_scorer(open_session(variant_file(bundle, card, "int8")))
    moved = {}
    for name, scorer in (("static", static), ("dynamic", dynamic)):
        alone = np.array([score_encoded(scorer, card.formatting, [e])[0] for e in encoded])
        together = score_encoded(scorer, card.formatting, encoded)
        moved[name] = float(np.abs(alone - together).max())
    assert moved["static"] < 1e-4 < moved["dynamic"], moved


@pytest.mark.parametrize("variant", ["int8-static", "fp32"])
def test_served_on_openvino_equals_offline(bert_onnx_bundle: Path, variant: str) -> None:
    with running(model=bert_onnx_bundle, backend="openvino", variant=variant, max_wait_ms=5) as live:
        r = httpx.post(live.url + "/score", json={"items": [{"prompt": p, "completion": c} for p, c in ITEMS]})
        assert r.status_code == 200, r.text
        expected = openvino_offline(bert_onnx_bundle, variant, ITEMS)
        np.testing.assert_allclose(r.json()["scores"], expected, atol=1e-4)
        about = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]
        assert about["backend"] == "openvino" and about["variant"] == variant, about
        assert about["runtime"]["detail"] == "CPU, f32 inference precision"
    if variant == "fp32":  # OpenVINO in f32 runs the fp32 graph as onnxruntime does
        card = read_card(bert_onnx_bundle)
        encoded = Formatter(load_tokenizer(bert_onnx_bundle), card.formatting).encode_many(ITEMS)
        ort = score_encoded(onnx_scorer(open_session(variant_file(bert_onnx_bundle, card, "fp32"))), card.formatting,
                            encoded)
        np.testing.assert_allclose(openvino_offline(bert_onnx_bundle, "fp32", ITEMS), ort, atol=1e-4)


@pytest.mark.parametrize(("settings", "message"), [
    ({"backend": "openvino", "variant": "fp16"}, "the openvino backend serves fp32, int8 and int8-static"),
    ({"backend": "openvino", "device": "cuda"}, "on --device cpu"),
    ({"backend": "torch", "variant": "int8-static"}, "variant int8-static is an ONNX export"),
    ({"backend": "openvino", "variant": "bf16"}, "variant bf16 runs on the torch backend"),
])
def test_incoherent_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceSettings(model=("x",), **settings)
