"""Scoring many inputs with any backend, and evaluating a preference set — backend-agnostic.

A backend is just a :data:`BatchScorer`: a function from a padded batch to one score per row. Training
passes a torch model, export an onnxruntime session; both get the same batching (length-sorted, so
little padding), the same invariant checks (one finite score per input) and the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from rewardmodel.batching import PaddedBatch, pad_batch
from rewardmodel.errors import BundleError
from rewardmodel.formatting import EncodedInput, FormatSpec, Formatter
from rewardmodel.head import OutputLayout
from rewardmodel.metrics import PairwiseReport, criteria_report, pairwise_report
from rewardmodel.records import PreferenceExample

BatchScorer = Callable[[PaddedBatch], npt.NDArray[np.floating]]
"""Outputs of a padded batch: shape ``(rows,)`` or ``(rows, 1)``, or ``(rows, width)`` as the card's
:class:`~rewardmodel.head.OutputLayout` says (criteria, gated objectives, step rewards)."""

RowScorer = Callable[[PaddedBatch], tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]]
"""(outputs, read rows) of a padded batch: the outputs as :data:`BatchScorer` gives them, and ``(rows, H)``, the
vector each row's reward was read from (:mod:`rewardmodel.personal`)."""

T = TypeVar("T")
Progress = Callable[[Iterable[T]], Iterable[T]]


def _no_progress(it: Iterable[T]) -> Iterable[T]:
    return it


def _progress_or_not(progress: Progress[list[int]] | None) -> Progress[list[int]]:
    return progress or _no_progress


def model_outputs(raw: object, rows: int, width: int = 1) -> npt.NDArray[np.float64]:
    """``raw`` as a ``(rows, width)`` float array; a reward model that returns anything else is a bug we name."""
    out = np.asarray(raw, dtype=np.float64)
    if out.ndim == 1 and width == 1:
        out = out[:, None]
    if out.shape != (rows, width):
        want = "one score" if width == 1 else f"{width} outputs"
        head = "a single-output (num_labels=1) score head" if width == 1 else f"a head of {width} outputs"
        raise BundleError(f"the model must return {want} per item: {rows} in, shape {out.shape} out; "
                          f"is its head {head}, as its card says?")
    return out


def one_score_per_row(raw: object, rows: int) -> npt.NDArray[np.float64]:
    """``raw`` as a ``(rows,)`` float array (see :func:`model_outputs`)."""
    return model_outputs(raw, rows)[:, 0]


def outputs_encoded(
    scorer: BatchScorer, spec: FormatSpec, encoded: Sequence[EncodedInput], batch_size: int = 32,
    progress: Progress[list[int]] | None = None, width: int = 1,
) -> npt.NDArray[np.float64]:
    """Outputs ``(len(encoded), width)`` in input order; batches are cut from the inputs sorted by length."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    outputs = np.empty((len(encoded), width), dtype=np.float64)
    for rows in _progress_or_not(progress)(chunks):
        outputs[rows] = model_outputs(scorer(pad_batch([encoded[i] for i in rows], spec)), len(rows), width)
    if not np.isfinite(outputs).all():
        raise RuntimeError("the model produced NaN/inf scores; check the checkpoint and its dtype")
    return outputs


def rows_encoded(
    scorer: RowScorer, spec: FormatSpec, encoded: Sequence[EncodedInput], batch_size: int = 32,
    progress: Progress[list[int]] | None = None, width: int = 1,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(outputs ``(n, width)``, read rows ``(n, H)``) of ``encoded``, in input order (see :func:`outputs_encoded`)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    outputs = np.empty((len(encoded), width), dtype=np.float64)
    rows: npt.NDArray[np.float64] | None = None
    for chunk in _progress_or_not(progress)(chunks):
        out, read = scorer(pad_batch([encoded[i] for i in chunk], spec))
        outputs[chunk] = model_outputs(out, len(chunk), width)
        if rows is None:
            rows = np.empty((len(encoded), np.asarray(read).shape[-1]), dtype=np.float64)
        rows[chunk] = np.asarray(read, dtype=np.float64)
    if rows is None or not (np.isfinite(outputs).all() and np.isfinite(rows).all()):
        raise RuntimeError("the model produced NaN/inf outputs or no rows; check the checkpoint and its dtype")
    return outputs, rows


def score_encoded(
    scorer: BatchScorer, spec: FormatSpec, encoded: Sequence[EncodedInput], batch_size: int = 32,
    progress: Progress[list[int]] | None = None,
) -> npt.NDArray[np.float64]:
    """Scores of a one-output model's ``encoded`` inputs, in input order."""
    return outputs_encoded(scorer, spec, encoded, batch_size, progress)[:, 0]


def _per_example(examples: Sequence[PreferenceExample], flat: Sequence[T]) -> list[list[T]]:
    out, start = [], 0
    for ex in examples:
        out.append(list(flat[start:start + len(ex.completions)]))
        start += len(ex.completions)
    return out


def score_examples(
    scorer: BatchScorer, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: Progress[list[int]] | None = None, layout: OutputLayout | None = None,
) -> tuple[list[list[float]], list[list[int]], int]:
    """(rewards, completion token counts, truncated inputs): one reward and length per completion.
    ``layout``: the card's (None: one output, the reward)."""
    scores, lengths, truncated, _ = _score_examples(scorer, formatter, examples, batch_size, progress, layout)
    return scores, lengths, truncated


def _score_examples(
    scorer: BatchScorer, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int,
    progress: Progress[list[int]] | None, layout: OutputLayout | None,
) -> tuple[list[list[float]], list[list[int]], int, npt.NDArray[np.float64]]:
    encoded = formatter.encode_many([(ex.prompt, c) for ex in examples for c in ex.completions])
    outputs = outputs_encoded(scorer, formatter.spec, encoded, batch_size, progress, layout.width if layout else 1)
    rewards = [float(r) for r in (layout.reward(outputs) if layout else outputs[:, 0])]
    lengths = [e.completion_tokens for e in encoded]
    return (_per_example(examples, rewards), _per_example(examples, lengths), sum(e.truncated for e in encoded),
            outputs)


def evaluate(
    scorer: BatchScorer, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: Progress[list[int]] | None = None, layout: OutputLayout | None = None,
) -> tuple[PairwiseReport, int]:
    """Report over ``examples`` (per criterion too, for a criteria model) and the number of truncated inputs."""
    scores, lengths, truncated, outputs = _score_examples(scorer, formatter, examples, batch_size, progress, layout)
    report = pairwise_report(examples, scores, lengths)
    if layout is not None and layout.criteria is not None:
        per_item = list(layout.criteria_outputs(outputs))
        report = replace(report, criteria=criteria_report(examples, _per_example(examples, per_item),
                                                          layout.criteria.names))
    return report, truncated
