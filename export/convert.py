"""fp16 and int8 variants of an fp32 ONNX reward model, built with onnxruntime's own tooling.

* fp16 (GPU serving): model types onnxruntime's transformer optimizer knows (BERT family) are fused
  (attention, SkipLayerNorm, bias-GELU) and converted by it; others get the generic float16 conversion
  with overflow-prone ops (normalisations, softmax, reductions, pow/sqrt/exp) kept in fp32. Inputs and
  outputs stay int64/fp32 either way, so callers need not know the variant.
* fp32: the fused graph for the BERT family (contrib ops that both the CPU and CUDA providers run),
  the plain export for the others.
* int8 (CPU serving): dynamic quantization, per-channel int8 weights in a 7-bit range (no saturation on
  CPUs without VNNI); the BERT family is fused first so the attention block quantizes as one op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx

from export.errors import ExportError
from export.onnx_export import TWO_GB, save_model

log = logging.getLogger(__name__)


class _PreProcessingHint(logging.Filter):
    """Drops onnxruntime's "consider pre-processing before quantization" warning. Its pre-processing is
    shape inference plus graph optimization; the graphs we quantize were optimized and fused by
    onnxruntime's transformer optimizer already, and its shape inference cannot type the fused ops."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _without_pre_processing_hint() -> Iterator[None]:
    hint = _PreProcessingHint()
    root = logging.getLogger()  # onnxruntime's quantizer logs through the root logger
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)

OPTIMIZER_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                   "electra": "bert", "camembert": "bert"}
"""transformers model_type → onnxruntime transformer-optimizer model type, for the types it fuses."""

FP32_OPS = [
    "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "Pow", "Sqrt",
    "Exp", "Log", "CumSum", "ArgMax", "Range",
]
"""Ops kept in fp32 by the generic fp16 conversion: fp16 overflows or loses precision in them."""


def fused_model(fp32: Path, model_type: str, num_heads: int, hidden_size: int, use_gpu: bool) -> onnx.ModelProto | None:
    """The optimizer's fused graph for a model type it knows, else ``None``."""
    opt_type = OPTIMIZER_TYPES.get(model_type)
    if opt_type is None:
        return None
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(fp32), model_type=opt_type, num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, use_gpu=use_gpu)
    return optimized.model


def to_fp32(raw: Path, out: Path, model_type: str, num_heads: int, hidden_size: int,
            external_data_threshold: int = TWO_GB) -> str:
    """Write the fp32 variant: the fused graph where the optimizer knows the model type, else the export."""
    fused = fused_model(raw, model_type, num_heads, hidden_size, use_gpu=False)
    if fused is None:
        save_model(onnx.load(str(raw)), out, external_data_threshold)
        return "torch.onnx.export (TorchScript exporter), dynamic batch and sequence axes"
    save_model(fused, out, external_data_threshold)
    return "torch.onnx.export, fused by the onnxruntime transformer optimizer (Attention, SkipLayerNorm, BiasGelu)"


def to_fp16(fp32: Path, out: Path, model_type: str, num_heads: int, hidden_size: int,
            external_data_threshold: int = TWO_GB) -> str:
    """Write the fp16 variant; returns how it was converted (for the card)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fused = fused_model(fp32, model_type, num_heads, hidden_size, use_gpu=True)
    if fused is not None:
        model = OnnxModel(fused)
        model.convert_float_to_float16(keep_io_types=True)
        proto, method = model.model, "onnxruntime transformer optimizer (fused) + float16"
    else:
        block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
        converted = OnnxModel(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True, op_block_list=block))
        converted.topological_sort()  # the converter appends its Cast nodes after their consumers
        proto, method = converted.model, "generic float16 conversion, normalisation/softmax/reduction ops kept in fp32"
    save_model(proto, out, external_data_threshold)
    return method


def to_int8(fp32: Path, out: Path, model_type: str, num_heads: int, hidden_size: int,
            external_data_threshold: int = TWO_GB) -> str:
    """Write the int8 variant (dynamic, per-channel); returns how it was converted."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    fused = fused_model(fp32, model_type, num_heads, hidden_size, use_gpu=False)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        source = fp32
        if fused is not None:
            source = Path(tmp) / "fused.onnx"
            save_model(fused, source, external_data_threshold)
        quantized = Path(tmp) / "int8.onnx"
        try:
            with _without_pre_processing_hint():
                # reduce_range: 7-bit weights. Without VNNI, onnxruntime's u8×s8 kernels (AVX2's
                # vpmaddubsw) saturate their int16 sums: on a 2-core AVX2-only EPYC the tiny test models'
                # int8 scores drifted by 0.33 (a fifth of the reward) and failed parity; with it they pass.
                # The bundle is served on CPUs the export never sees, so it must not depend on VNNI.
                quantize_dynamic(str(source), str(quantized), per_channel=True, reduce_range=True,
                                 weight_type=QuantType.QInt8,
                                 use_external_data_format=quantized_needs_external(source, external_data_threshold),
                                 # shape inference cannot type the outputs of fused contrib ops
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        except Exception as exc:  # onnxruntime raises plain exceptions for unsupported graphs
            raise ExportError(f"int8 dynamic quantization failed: {exc}") from exc
        save_model(onnx.load(str(quantized)), out, external_data_threshold)
    fused_note = "fused by the onnxruntime transformer optimizer, then " if fused is not None else ""
    return f"{fused_note}dynamic quantization, per-channel int8 weights (reduced range)"


def quantized_needs_external(source: Path, threshold: int) -> bool:
    """Whether the quantizer must write external data (int8 weights are ~1/4 of fp32)."""
    size = source.stat().st_size + sum(p.stat().st_size for p in source.parent.glob(source.name + ".data"))
    return size // 4 >= threshold
