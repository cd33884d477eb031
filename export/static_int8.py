"""Static int8: weights and activations quantized ahead of time, scales calibrated on real inputs.

Dynamic int8 (``export.convert.to_int8``) measures each activation's range per batch at run time: the
measuring costs time, and an item's score moves with its neighbours in the batch. Static int8 fixes the
ranges on calibration data, so the int8 kernels run back to back and a score depends on its item only.
Two quantizers write it as an ONNX graph with QuantizeLinear/DequantizeLinear pairs (QDQ), which both
onnxruntime and OpenVINO run with int8 kernels:

* :func:`nncf_int8_onnx`: NNCF's post-training quantization for transformers (SmoothQuant moves activation
  outliers into the weights first; the ignored patterns keep softmax and normalisations in float);
* :func:`ort_static_int8`: onnxruntime's ``quantize_static`` (QDQ, per-channel weights, MinMax ranges).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx

from export.errors import ExportError
from export.onnx_export import TWO_GB, save_model
from rewardmodel import EncodedInput, FormatSpec, PaddedBatch, pad_batch

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 8


def calibration_batches(items: Sequence[EncodedInput], spec: FormatSpec,
                        size: int = CALIBRATION_BATCH) -> list[PaddedBatch]:
    """The calibration items as padded batches, length-sorted as the service batches them (so the ranges
    seen include real padding, not only full-length rows)."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    return [pad_batch([items[i] for i in order[s:s + size]], spec) for s in range(0, len(order), size)]


def _feeds(model: onnx.ModelProto, batches: Sequence[PaddedBatch]) -> list[dict[str, Any]]:
    names = [i.name for i in model.graph.input]
    return [{n: b.as_dict()[n] for n in names} for b in batches]


def nncf_int8_onnx(source: Path, out: Path, batches: Sequence[PaddedBatch],
                   external_data_threshold: int = TWO_GB) -> str:
    """Quantize ``source`` (fp32 ONNX) with NNCF on ``batches``; returns how (for the card)."""
    try:
        import nncf
    except ImportError as exc:
        raise ExportError("static int8 needs NNCF: pip install 'rewardserve[export]'") from exc
    model = onnx.load(str(source))
    dataset = nncf.Dataset(_feeds(model, batches))
    try:
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(batches), preset=nncf.QuantizationPreset.MIXED)
    except Exception as exc:  # NNCF raises its own and onnx's errors for graphs it cannot handle
        raise ExportError(f"NNCF static int8 quantization failed: {exc}") from exc
    save_model(quantized, out, external_data_threshold)
    items = sum(b.input_ids.shape[0] for b in batches)
    return (f"NNCF {nncf.__version__} post-training quantization (model type transformer: SmoothQuant, "
            f"mixed preset: symmetric weights, asymmetric activations), QDQ, calibrated on {items} items")


def ort_static_int8(source: Path, out: Path, batches: Sequence[PaddedBatch], model_type: str = "",
                    external_data_threshold: int = TWO_GB) -> str:
    """Quantize ``source`` with onnxruntime's static quantizer (QDQ) on ``batches``; returns how."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(source), load_external_data=False)
    feeds = _feeds(model, batches)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, Any]] = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        quantized = Path(tmp) / "int8.onnx"
        try:
            quantize_static(str(source), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul", "Gemm"],
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        except Exception as exc:  # onnxruntime raises plain exceptions for graphs it cannot quantize
            raise ExportError(f"onnxruntime static int8 quantization failed: {exc}") from exc
        save_model(onnx.load(str(quantized)), out, external_data_threshold)
    items = sum(b.input_ids.shape[0] for b in batches)
    return f"onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, MinMax on {items} items"
