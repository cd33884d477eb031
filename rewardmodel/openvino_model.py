"""OpenVINO compiled models over a bundle's ONNX variants, as batch scorers — openvino imported on call.

OpenVINO reads the exported ONNX files as they are (onnxruntime's fused contrib ops included) and runs the
static int8 variant's QuantizeLinear/DequantizeLinear pairs as int8 kernels (VNNI, AMX). Export's parity
gate and the service's openvino backend compile the same way, so the gate checks what is served.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rewardmodel.batching import PaddedBatch
from rewardmodel.errors import BundleError
from rewardmodel.onnx_model import ROWS_OUTPUT
from rewardmodel.scoring import BatchScorer, RowScorer

Precision = Literal["f32", "bf16"]
"""The precision OpenVINO runs the float (unquantized) ops in. Its CPU default is bf16 on CPUs with
avx512_bf16 or AMX: we ask for f32 unless told, so a variant's numbers do not depend on the CPU."""


def openvino_available() -> bool:
    """Whether the openvino runtime is installed (``pip install 'rewardserve[openvino]'``)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def compile_onnx(path: Path, threads: int = 0, precision: Precision = "f32", streams: int = 1) -> Any:
    """An OpenVINO CPU compiled model of the ONNX file at ``path``; ``threads`` 0 lets OpenVINO choose.

    ``streams`` > 1 compiles that many CPU streams, which split the ``threads`` between them: each infer
    request runs on its stream's cores, so several batches run at once without waiting on each other.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise BundleError("the openvino backend needs OpenVINO: pip install 'rewardserve[openvino]'") from exc
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if streams > 1:
        config["NUM_STREAMS"] = streams
    else:
        config["PERFORMANCE_HINT"] = "LATENCY"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    try:
        return ov.Core().compile_model(str(path), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable or unsupported graphs
        raise BundleError(f"OpenVINO cannot compile {path}: {exc}") from exc


def openvino_scorer(compiled: Any, requests: int = 1) -> BatchScorer:
    """Score padded batches with ``requests`` infer requests of ``compiled`` (one per stream): up to that many
    callers at once, each on its own request (an infer request is not thread-safe); feeds only the inputs the
    graph declares."""
    return openvino_scorers(compiled, requests)[0]


def openvino_scorers(compiled: Any, requests: int = 1) -> tuple[BatchScorer, RowScorer | None]:
    """(scores, scores and read rows) of padded batches, as :func:`openvino_scorer`, sharing its infer requests;
    the row scorer is None when the graph has no read rows."""
    names = [port.get_any_name() for port in compiled.inputs]
    has_rows = any(ROWS_OUTPUT in port.get_names() for port in compiled.outputs)
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for _ in range(requests):
        idle.put(compiled.create_infer_request())

    def run(batch: PaddedBatch, with_rows: bool) -> list[npt.NDArray[np.float32]]:
        feed = batch.as_dict()
        missing = [n for n in names if n not in feed]
        if missing:
            raise BundleError(f"the ONNX graph expects inputs {missing} that the bundle's formatting does not make")
        request = idle.get()  # never waits while callers are at most ``requests``
        try:
            result = request.infer({n: feed[n] for n in names})
            out = [np.array(result[compiled.outputs[0]], dtype=np.float32)]
            if with_rows:  # OpenVINO computes every output; only a personal batch copies the rows out
                out.append(np.array(result[compiled.output(ROWS_OUTPUT)], dtype=np.float32))
            return out
        finally:
            idle.put(request)

    def score(batch: PaddedBatch) -> npt.NDArray[np.float32]:
        return run(batch, False)[0]

    def score_rows(batch: PaddedBatch) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        out, rows = run(batch, True)
        return out, rows

    return score, score_rows if has_rows else None
