"""Evaluating an exported variant on preferences: the metrics of ``rewardserve eval``, via onnxruntime (and
int8-static via OpenVINO where it is installed, the runtime that serves it and that its parity gate used)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rewardmodel import BundleCard, Formatter, PairwiseReport, PreferenceExample, load_tokenizer, read_card
from rewardmodel.onnx_model import CPU, onnx_scorer, open_session, variant_file
from rewardmodel.openvino_model import compile_onnx, openvino_available, openvino_scorer
from rewardmodel.scoring import Progress, evaluate


def evaluate_variant(
    bundle: str | Path, variant: str, examples: Sequence[PreferenceExample], batch_size: int = 32,
    providers: Sequence[str] = (CPU,), progress: Progress[list[int]] | None = None, card: BundleCard | None = None,
) -> tuple[PairwiseReport, int]:
    """Pairwise report of the bundle's ``variant`` ONNX model, and the number of truncated inputs.

    ``card``: the bundle's card when the caller has already read (and hash-checked) it.
    """
    root = Path(bundle)
    card = card or read_card(root)
    path = variant_file(root, card, variant)
    if variant == "int8-static" and openvino_available():
        scorer = openvino_scorer(compile_onnx(path))
    else:
        scorer = onnx_scorer(open_session(path, providers))
    formatter = Formatter(load_tokenizer(root), card.formatting)
    return evaluate(scorer, formatter, examples, batch_size, progress, card.criteria)
