"""Evaluating an exported variant on preferences: the metrics of ``rewardserve eval``, via onnxruntime (and
int8-static via OpenVINO where it is installed, the runtime that serves it and that its parity gate used)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rewardmodel import BundleCard, Formatter, PairwiseReport, PreferenceExample, load_tokenizer, read_card
from rewardmodel.onnx_model import CPU, has_rows, onnx_row_scorer, onnx_scorer, open_session, variant_file
from rewardmodel.openvino_model import compile_onnx, openvino_available, openvino_scorers
from rewardmodel.scoring import BatchScorer, Progress, RowScorer, evaluate


def variant_scorer(path: Path, variant: str, providers: Sequence[str] = (CPU,)) -> tuple[BatchScorer, list[str]]:
    """A scorer of the variant's file and what runs it: int8-static on OpenVINO where installed (the runtime
    that serves it, so the parity gate and ``eval`` check what is served), the others on onnxruntime."""
    scorer, _, runs = variant_scorers(path, variant, providers)
    return scorer, runs


def variant_scorers(path: Path, variant: str, providers: Sequence[str] = (CPU,)
                    ) -> tuple[BatchScorer, RowScorer | None, list[str]]:
    """(scores, scores and read rows, what runs them) of the variant's file, from one loaded model, on the runtime
    :func:`variant_scorer` picks; the row scorer is None when the graph has no read rows."""
    if variant == "int8-static" and openvino_available():
        return (*openvino_scorers(compile_onnx(path)), ["OpenVINO CPU (f32)"])
    session = open_session(path, providers)
    return onnx_scorer(session), onnx_row_scorer(session) if has_rows(session) else None, list(providers)


def evaluate_variant(
    bundle: str | Path, variant: str, examples: Sequence[PreferenceExample], batch_size: int = 32,
    providers: Sequence[str] = (CPU,), progress: Progress[list[int]] | None = None, card: BundleCard | None = None,
) -> tuple[PairwiseReport, int]:
    """Pairwise report of the bundle's ``variant`` ONNX model, and the number of truncated inputs.

    ``card``: the bundle's card when the caller has already read (and hash-checked) it.
    """
    root = Path(bundle)
    card = card or read_card(root)
    scorer, _ = variant_scorer(variant_file(root, card, variant), variant, providers)
    formatter = Formatter(load_tokenizer(root), card.formatting)
    return evaluate(scorer, formatter, examples, batch_size, progress, card.layout)
