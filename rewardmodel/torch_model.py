"""Loading a bundle's torch model and scoring with it — torch is imported only when called.

Training's evaluation, export's parity reference and a torch serving backend all load bundles the same
way: safetensors only, ``trust_remote_code`` off unless asked, the card checked first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rewardmodel.batching import PaddedBatch
from rewardmodel.card import BundleCard, read_card
from rewardmodel.scoring import BatchScorer

if TYPE_CHECKING:
    import torch


def load_torch_model(directory: str | Path, device: str = "cpu", dtype: torch.dtype | None = None,
                     trust_remote_code: bool = False, card: BundleCard | None = None,
                     **model_kwargs: Any) -> tuple[Any, BundleCard]:
    """(model in eval mode, card) for a bundle; the card is read and its file hashes verified first.

    ``model_kwargs`` go to ``from_pretrained`` (e.g. ``attn_implementation``).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    card = card or read_card(directory)
    model = AutoModelForSequenceClassification.from_pretrained(
        directory, use_safetensors=True, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code,
        **model_kwargs,
    )
    return model.to(device).eval(), card


def torch_scorer(model: Any) -> BatchScorer:
    """A :data:`~rewardmodel.scoring.BatchScorer` running ``model`` on its own device, without gradients."""
    import torch

    device = next(model.parameters()).device

    def score(batch: PaddedBatch) -> npt.NDArray[np.float32]:
        inputs = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.as_dict().items()}
        with torch.inference_mode():
            return model(**inputs).logits.float().cpu().numpy()

    return score
