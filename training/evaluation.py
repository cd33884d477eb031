"""Evaluating a torch reward model on preferences — the same code path as ``rewardserve eval``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from rewardmodel import Formatter, PairwiseReport, PreferenceExample
from rewardmodel.criteria import Criteria
from rewardmodel.head import HeadSpec, OutputLayout
from rewardmodel.scoring import evaluate
from rewardmodel.torch_model import torch_scorer


def evaluate_model(
    model: torch.nn.Module, formatter: Formatter, examples: Sequence[PreferenceExample], batch_size: int = 32,
    progress: bool = True, criteria: Criteria | None = None, layout: OutputLayout | None = None,
) -> tuple[PairwiseReport, int]:
    """Pairwise report of ``model`` on ``examples`` and the number of truncated inputs (model left as found).
    ``layout``: a bundle's (default: a classifier being trained, with ``criteria``)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate(torch_scorer(model), formatter, examples, batch_size,
                        lambda chunks: tqdm(chunks, desc="scoring", unit="batch", disable=not progress, leave=False),
                        layout or OutputLayout(HeadSpec(), criteria))
    finally:
        model.train(was_training)
