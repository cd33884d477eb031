"""Scoring many inputs with any backend, and evaluating a preference set — backend-agnostic.

A backend is just a :data:`BatchScorer`: a function from a padded batch to one score per row. Training
passes a torch model, export an onnxruntime session; both get the same batching (length-sorted, so
little padding), the same invariant checks (one finite score per input) and the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from rewardmodel.batching import PaddedBatch, pad_batch
from rewardmodel.errors import BundleError
from rewardmodel.formatting import EncodedInput, FormatSpec, Formatter
from rewardmodel.metrics import PairwiseReport, pairwise_report
from rewardmodel.records import PreferenceExample

BatchScorer = Callable[[PaddedBatch], npt.NDArray[np.floating]]
"""Scores of a padded batch: shape ``(rows,)`` or ``(rows, 1)``."""

T = TypeVar("T")
Progress = Callable[[Iterable[T]], Iterable[T]]


def _no_progress(it: Iterable[T]) -> Iterable[T]:
    return it


def _progress_or_not(progress: Progress[list[int]] | None) -> Progress[list[int]]:
    return progress or _no_progress


def one_score_per_row(raw: object, rows: int) -> npt.NDArray[np.float64]:
    """``raw`` as a ``(rows,)`` float array; a reward model that returns anything else is a bug we name."""
    out = np.asarray(raw, dtype=np.float64)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (rows,):
        raise BundleError(f"the model must return one score per item: {rows} in, shape {out.shape} out; is its "
                          "head a single-output (num_labels=1) score head?")
    return out


def score_encoded(
    scorer: BatchScorer, spec: FormatSpec, encoded: Sequence[EncodedInput], batch_size: int = 32,
    progress: Progress[list[int]] | None = None,
) -> npt.NDArray[np.float64]:
    """Scores of ``encoded`` in input order; batches are cut from the inputs sorted by length."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    scores = np.empty(len(encoded), dtype=np.float64)
    for rows in _progress_or_not(progress)(chunks):
        scores[rows] = one_score_per_row(scorer(pad_batch([encoded[i] for i in rows], spec)), len(rows))
    if not np.isfinite(scores).all():
        raise RuntimeError("the model produced NaN/inf scores; check the checkpoint and its dtype")
    return scores


def score_examples(
    scorer: BatchScorer, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: Progress[list[int]] | None = None,
) -> tuple[list[list[float]], list[list[int]], int]:
    """(scores, completion token counts, truncated inputs): one score and length per completion."""
    encoded = formatter.encode_many([(ex.prompt, c) for ex in examples for c in ex.completions])
    flat = score_encoded(scorer, formatter.spec, encoded, batch_size, progress)
    scores: list[list[float]] = []
    lengths: list[list[int]] = []
    start = 0
    for ex in examples:
        end = start + len(ex.completions)
        scores.append([float(s) for s in flat[start:end]])
        lengths.append([e.completion_tokens for e in encoded[start:end]])
        start = end
    return scores, lengths, sum(e.truncated for e in encoded)


def evaluate(
    scorer: BatchScorer, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: Progress[list[int]] | None = None,
) -> tuple[PairwiseReport, int]:
    """Pairwise report over ``examples`` and the number of truncated inputs."""
    scores, lengths, truncated = score_examples(scorer, formatter, examples, batch_size, progress)
    return pairwise_report(examples, scores, lengths), truncated
