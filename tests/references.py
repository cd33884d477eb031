"""Offline reference scores: a bundle's ONNX variant run in process, what a served answer must equal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file
from rewardmodel.scoring import score_encoded


def offline(bundle: Path, inputs: Sequence[tuple[object, str]], variant: str = "fp32") -> np.ndarray:
    """Scores of ``inputs`` ((prompt, completion) pairs) by ``bundle``'s ``variant`` on onnxruntime, in process."""
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    scorer = onnx_scorer(open_session(variant_file(bundle, card, variant)))
    return score_encoded(scorer, card.formatting, formatter.encode_many(inputs))  # type: ignore[arg-type]
