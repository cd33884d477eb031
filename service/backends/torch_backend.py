"""torch backend: the safetensors checkpoint on CPU or CUDA, in fp32, bf16 or fp16, with SDPA attention where the
architecture has it; any family's head (the card's, :mod:`rewardmodel.torch_heads`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from rewardmodel import BundleCard, PaddedBatch, RewardModelError
from rewardmodel.variants import TORCH_DTYPES
from service.backends.base import BackendInfo, score_batch, score_rows_batch
from service.errors import BackendFailure
from service.settings import ServiceSettings


class TorchBackend:
    """Scores batches with the bundle's transformers checkpoint."""

    streams = 1
    """torch's intra-op pool is process-wide: one batch at a time."""
    pad_multiple = 1

    def __init__(self, root: Path, card: BundleCard, variant: str, device: str, threads: int = 0,
                 trust_remote_code: bool = False) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendFailure("--backend torch needs torch and transformers: pip install 'rewardserve[train]'") \
                from exc
        from rewardmodel.torch_model import load_torch_model, torch_row_scorer, torch_scorer

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendFailure("--device cuda, but torch sees no CUDA device; serve with --device cpu")
        if threads:
            torch.set_num_threads(threads)
        dtype = getattr(torch, TORCH_DTYPES[variant])
        try:
            # transformers picks SDPA attention where the architecture has it, eager otherwise (DeBERTa-v2)
            model, _ = load_torch_model(root, device, dtype, trust_remote_code, card=card)
        except (OSError, ValueError, RuntimeError, RewardModelError) as exc:
            raise BackendFailure(f"cannot load the checkpoint in {root} on {device} as {variant}: {exc}") from exc
        self._torch = torch
        self._model = model
        self._width = card.layout.width
        self._score = torch_scorer(model)
        self._rows_error: str | None = model.why_no_rows()
        self._score_rows = torch_row_scorer(model) if self._rows_error is None else None
        self._device = torch.device(device)
        attention = getattr(model.config, "_attn_implementation", "sdpa")
        self.info = BackendInfo("torch", device, TORCH_DTYPES[variant], f"attention={attention}")

    @classmethod
    def from_settings(cls, root: Path, card: BundleCard, settings: ServiceSettings) -> TorchBackend:
        """The backend the settings describe."""
        return cls(root, card, settings.variant, settings.device, settings.threads, settings.trust_remote_code)

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row, computed without autograd."""
        return score_batch(self._score, batch, self._width, "torch")

    @property
    def rows_error(self) -> str | None:
        """Why this model serves no read rows (None: it does)."""
        return self._rows_error

    def score_rows(self, batch: PaddedBatch) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Scores and read rows, without autograd."""
        return score_rows_batch(self._score_rows, batch, self._width, "torch", self._rows_error)

    def health(self) -> None:
        """A CUDA device that has gone bad raises on synchronize."""
        if self._device.type == "cuda":
            try:
                self._torch.cuda.synchronize(self._device)
            except RuntimeError as exc:
                raise BackendFailure(f"the CUDA device failed: {exc}") from exc

    def close(self) -> None:
        """Free the model (and the CUDA cache)."""
        del self._model
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
