"""onnxruntime sessions over exported variants, as batch scorers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from export.errors import ExportError
from rewardmodel import PaddedBatch
from rewardmodel.scoring import BatchScorer

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime."""
    return list(ort.get_available_providers())


def open_session(path: Path, providers: Sequence[str] = (CPU,), threads: int = 0) -> ort.InferenceSession:
    """An inference session with all graph optimizations; ``threads`` 0 lets onnxruntime choose."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime's errors are untyped (Fail, InvalidGraph, NotImplemented, …)
        raise ExportError(f"onnxruntime cannot load {path} with {list(providers)}: {exc}") from exc


def onnx_scorer(session: ort.InferenceSession) -> BatchScorer:
    """Score padded batches with ``session``; feeds only the inputs its graph declares."""
    names = [i.name for i in session.get_inputs()]

    def score(batch: PaddedBatch) -> npt.NDArray[np.float32]:
        feed = batch.as_dict()
        missing = [n for n in names if n not in feed]
        if missing:
            raise ExportError(f"the ONNX graph expects inputs {missing} that the bundle's formatting does not make")
        return session.run(None, {n: feed[n] for n in names})[0]

    return score
