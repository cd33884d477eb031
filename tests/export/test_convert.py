"""The conversions on their own (export/convert.py): which path each model type takes, what the graphs hold,
and the int8 quantizer's noise kept out of the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.convert import fused_model, quantized_needs_external, to_fp16, to_int8
from rewardmodel import read_card
from rewardmodel.variants import ONNX_VARIANTS


def _shape(bundle: Path) -> tuple[str, int, int]:
    """(model type, attention heads, hidden size): what the optimizer is told."""
    config = json.loads((bundle / "config.json").read_text())
    return read_card(bundle).model_type, int(config["num_attention_heads"]), int(config["hidden_size"])


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        feed["token_type_ids"] = np.zeros_like(ids)
    return session.run(None, feed)[0]


def test_only_the_bert_family_is_fused(bert_onnx_bundle: Path, qwen_onnx_bundle: Path) -> None:
    fp32 = ONNX_VARIANTS["fp32"].file
    assert fused_model(bert_onnx_bundle / fp32, *_shape(bert_onnx_bundle), use_gpu=False) is not None
    assert fused_model(qwen_onnx_bundle / fp32, *_shape(qwen_onnx_bundle), use_gpu=False) is None


def test_generic_fp16_keeps_io_types_and_the_overflow_prone_ops_in_fp32(qwen_onnx_bundle: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "fp16.onnx"
    assert to_fp16(qwen_onnx_bundle / ONNX_VARIANTS["fp32"].file, out, *_shape(qwen_onnx_bundle)).startswith("generic")
    model = onnx.load(str(out))
    onnx.checker.check_model(model)  # topologically sorted and well-typed
    halves = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > len(model.graph.initializer) // 2  # the weights went to fp16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers see fp32
    ids = np.array([[1, 5, 6, 7, 8]], dtype=np.int64)
    np.testing.assert_allclose(_run(out, ids), _run(qwen_onnx_bundle / ONNX_VARIANTS["fp32"].file, ids), atol=5e-2)


def test_int8_quantizes_the_fused_graph_quietly(bert_onnx_bundle: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "int8.onnx"
    with caplog.at_level(logging.WARNING):
        method = to_int8(bert_onnx_bundle / ONNX_VARIANTS["fp32"].file, out, *_shape(bert_onnx_bundle))
    assert method.startswith("fused by the onnxruntime transformer optimizer")
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]  # the filtered hint
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}, ops
    assert out.stat().st_size < (bert_onnx_bundle / ONNX_VARIANTS["fp32"].file).stat().st_size / 2
    ids = np.array([[101, 2129, 2024, 2017, 102]], dtype=np.int64)
    np.testing.assert_allclose(_run(out, ids), _run(bert_onnx_bundle / ONNX_VARIANTS["fp32"].file, ids), atol=0.5)


def test_external_data_is_needed_from_a_quarter_of_the_threshold(tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(b"x" * 100)
    assert quantized_needs_external(source, 25) and not quantized_needs_external(source, 26)
    (tmp_path / "m.onnx.data").write_bytes(b"x" * 100)  # external weights count too
    assert quantized_needs_external(source, 50) and not quantized_needs_external(source, 51)
