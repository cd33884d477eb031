"""Scoring completions with a torch reward model and evaluating pairwise preferences.

Used for the held-out report at the end of training and by ``rewardserve eval`` on a bundle, so both
print the same numbers for the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from rewardmodel import EncodedInput, Formatter, PairwiseReport, PreferenceExample, pad_batch, pairwise_report


@torch.inference_mode()
def score_encoded(
    model: PreTrainedModel, formatter: Formatter, encoded: Sequence[EncodedInput], batch_size: int = 32,
    progress: bool = True,
) -> npt.NDArray[np.float64]:
    """Scores of encoded inputs, in input order; batches are length-sorted to cut padding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    scores = np.empty(len(encoded), dtype=np.float64)
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", unit="batch", disable=not progress,
                      leave=False):
        rows = order[start:start + batch_size]
        batch = pad_batch([encoded[i] for i in rows], formatter.spec).as_dict()
        out = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()}).logits
        if out.shape != (len(rows), 1):
            raise RuntimeError(f"a reward model must return one logit per input, got shape {tuple(out.shape)}")
        scores[rows] = out[:, 0].float().cpu().numpy()
    if not np.isfinite(scores).all():
        raise RuntimeError("the model produced NaN/inf scores; check the checkpoint and its dtype")
    model.train(was_training)
    return scores


def score_examples(
    model: PreTrainedModel, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: bool = True,
) -> tuple[list[list[float]], list[list[int]], int]:
    """(scores, completion token counts, truncated items) per example and completion."""
    flat = [(ex.prompt, c) for ex in examples for c in ex.completions]
    encoded = formatter.encode_many(flat)
    scores = score_encoded(model, formatter, encoded, batch_size, progress)
    nested_scores: list[list[float]] = []
    nested_lengths: list[list[int]] = []
    i = 0
    for ex in examples:
        k = len(ex.completions)
        nested_scores.append([float(s) for s in scores[i:i + k]])
        nested_lengths.append([e.completion_tokens for e in encoded[i:i + k]])
        i += k
    return nested_scores, nested_lengths, sum(e.truncated for e in encoded)


def evaluate_model(
    model: PreTrainedModel, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: bool = True,
) -> tuple[PairwiseReport, int]:
    """Pairwise report of ``model`` on ``examples``, and how many inputs were truncated."""
    scores, lengths, truncated = score_examples(model, formatter, examples, batch_size, progress)
    return pairwise_report(examples, scores, lengths), truncated
