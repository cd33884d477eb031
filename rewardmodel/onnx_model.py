"""onnxruntime sessions over a bundle's exported variants, as batch scorers — onnxruntime imported on call.

Export's parity gate, ``rewardserve eval --variant`` and the service's onnxruntime backend open sessions
the same way: all graph optimizations on, only the inputs the graph declares fed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from rewardmodel.batching import PaddedBatch
from rewardmodel.card import BundleCard
from rewardmodel.errors import BundleError
from rewardmodel.scoring import BatchScorer, RowScorer

if TYPE_CHECKING:
    import onnxruntime as ort

ROWS_OUTPUT = "hidden"
"""The exported graph's second output: each item's read row (:mod:`rewardmodel.personal`); fetched only when
asked for."""
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def variant_file(root: str | Path, card: BundleCard, variant: str) -> Path:
    """Path of an exported ``variant`` recorded in ``card``; says how to export it when it is absent."""
    record = card.onnx.get(variant)
    if record is None or "file" not in record:
        raise BundleError(
            f"{root} has no {variant!r} ONNX variant (it has: {sorted(card.onnx) or 'none'}); "
            f"run `rewardserve export --model {root} --variants {variant}`"
        )
    return Path(root) / record["file"]


def open_session(path: Path, providers: Sequence[str] = (CPU,), threads: int = 0,
                 spin: bool = True) -> ort.InferenceSession:
    """An inference session with all graph optimizations; ``threads`` 0 lets onnxruntime choose.

    ``spin``: idle intra-op threads busy-wait for the next op (onnxruntime's default). Good when the
    session owns the cores; a server whose event loop and tokenizers share them may want it off.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime's errors are untyped (Fail, InvalidGraph, NotImplemented, …)
        raise BundleError(f"onnxruntime cannot load {path} with {list(providers)}: {exc}") from exc


def onnx_scorer(session: ort.InferenceSession) -> BatchScorer:
    """Score padded batches with ``session``; feeds only the inputs its graph declares, fetches only the scores."""
    fetch = [session.get_outputs()[0].name]
    feeds = _feeder(session)

    def score(batch: PaddedBatch) -> npt.NDArray[np.float32]:
        return session.run(fetch, feeds(batch))[0]

    return score


def has_rows(session: ort.InferenceSession) -> bool:
    """The graph returns read rows (exported by a rewardserve that knows personal rewards)."""
    return any(o.name == ROWS_OUTPUT for o in session.get_outputs())


def onnx_row_scorer(session: ort.InferenceSession) -> RowScorer:
    """(scores, read rows) of padded batches with ``session``; a graph exported without rows is refused."""
    if not has_rows(session):
        raise BundleError("this ONNX variant was exported without read rows: re-export the bundle "
                          "(rewardserve export) to serve personal rewards with it")
    fetch = [session.get_outputs()[0].name, ROWS_OUTPUT]
    feeds = _feeder(session)

    def score(batch: PaddedBatch) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        out, rows = session.run(fetch, feeds(batch))
        return out, rows

    return score


def _feeder(session: ort.InferenceSession) -> Callable[[PaddedBatch], dict[str, npt.NDArray[np.int64]]]:
    names = [i.name for i in session.get_inputs()]

    def feed(batch: PaddedBatch) -> dict[str, npt.NDArray[np.int64]]:
        given = batch.as_dict()
        missing = [n for n in names if n not in given]
        if missing:
            raise BundleError(f"the ONNX graph expects inputs {missing} that the bundle's formatting does not make")
        return {n: given[n] for n in names}

    return feed
