"""The int8-static variant (NNCF, calibrated) and the openvino backend: what the export records, what a real
server answers with it, and that a static-int8 score does not move with its batch neighbours."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest

from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file
from rewardmodel.openvino_model import compile_onnx, openvino_scorer
from rewardmodel.scoring import score_encoded
from rewardmodel.variants import ONNX_VARIANTS
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
    assert record["file"] == ONNX_VARIANTS["int8-static"].file and record["parity_passed"], record
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


@pytest.mark.parametrize(("backend", "variant"), [("openvino", "int8-static"), ("onnx", "int8")])
def test_two_streams_score_concurrent_requests_as_one_stream_does(bert_onnx_bundle: Path, backend: str,
                                                                  variant: str) -> None:
    """Many small requests at once, so that batches overlap on the two streams: every score is the one a single
    stream gives (static int8 and dynamic int8 alike: one item per request, so no neighbours move a score)."""
    card = read_card(bert_onnx_bundle)
    encoded = Formatter(load_tokenizer(bert_onnx_bundle), card.formatting).encode_many(ITEMS)
    file = variant_file(bert_onnx_bundle, card, variant)
    single = openvino_scorer(compile_onnx(file)) if backend == "openvino" else onnx_scorer(open_session(file))
    expected = {item: score_encoded(single, card.formatting, [e])[0] for item, e in zip(ITEMS, encoded, strict=True)}
    requests = [ITEMS[k % len(ITEMS)] for k in range(60)]
    with running(model=bert_onnx_bundle, backend=backend, variant=variant, streams=2, threads=2,
                 max_batch_items=1) as live, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda pc: httpx.post(live.url + "/score", json={
            "items": [{"prompt": pc[0], "completion": pc[1]}]}, timeout=30), requests))
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
        for item, r in zip(requests, answers, strict=True):
            np.testing.assert_allclose(r.json()["scores"], [expected[item]], atol=1e-4)
        detail = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]["runtime"]["detail"]
        if backend == "openvino":
            assert detail == "CPU, f32 inference precision, 2 streams"


@pytest.mark.parametrize(("settings", "message"), [
    ({"backend": "openvino", "streams": 2, "threads": 1}, "2 streams need at least 2 threads"),
    ({"backend": "torch", "streams": 2}, "streams > 1 splits CPU cores"),
    ({"device": "cuda", "streams": 2}, "streams > 1 splits CPU cores"),
    ({"backend": "openvino", "variant": "fp16"}, "the openvino backend serves fp32, int8 and int8-static"),
    ({"backend": "openvino", "device": "cuda"}, "on --device cpu"),
    ({"backend": "torch", "variant": "int8-static"}, "variant int8-static is an ONNX export"),
    ({"backend": "openvino", "variant": "bf16"}, "variant bf16 runs on the torch backend"),
])
def test_incoherent_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServiceSettings(model=("x",), **settings)
