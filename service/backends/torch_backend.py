"""torch backend: the safetensors checkpoint on CPU or CUDA, in fp32, bf16 or fp16, with SDPA attention where the
architecture has it; any family's head (the card's, :mod:`rewardmodel.torch_heads`).

Where the model packs (``--pack``, :mod:`rewardmodel.torch_packed`), a batch's items run as one sequence with
varlen attention: no padding is computed and the head runs on the rows it reads. Packing is proven at load:
probes of different lengths are scored packed and padded, and a model whose two scores differ is served padded
(or, with ``--pack on``, refused).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardmodel import BundleCard, Formatter, PaddedBatch, RewardModelError, load_tokenizer, pad_batch
from rewardmodel.variants import TORCH_DTYPES
from service.backends.base import BackendInfo, score_batch, score_rows_batch
from service.errors import BackendFailure
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

PACKING_PROBES = (("What is the capital of France?", "Paris."),
                  ("List three primes.", "Two, three and five.\n\nThose are the first three; seven is the fourth."),
                  ("Hi", "Hello! How can I help you today? Ask me anything at all, I am happy to help."))
"""Items of different lengths that packing must score as padding does before it serves (a step separator in one,
so a process reward model's step head reads something)."""
PACKING_TOLERANCE = {"float32": 1e-4, "float16": 3e-2, "bfloat16": 6e-2}
"""Largest difference between packed and padded scores, relative to the largest score, by dtype: kernels that sum
in another order differ by rounding; attention that leaks between items differs by the scores' own size."""


class TorchBackend:
    """Scores batches with the bundle's transformers checkpoint."""

    streams = 1
    """torch's intra-op pool is process-wide: one batch at a time."""
    pad_multiple = 1

    def __init__(self, root: Path, card: BundleCard, variant: str, device: str, threads: int = 0,
                 trust_remote_code: bool = False, pack: str = "auto") -> None:
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
        self._packed: Any = None
        if pack == "on" or (pack == "auto" and device == "cuda"):
            self._packed = self._packing(root, card, pack == "on", TORCH_DTYPES[variant])
        self.packs = self._packed is not None
        detail = f"attention={attention}, " + (f"packed ({self._packed.kernel})" if self.packs else "padded")
        self.info = BackendInfo("torch", device, TORCH_DTYPES[variant], detail)

    @classmethod
    def from_settings(cls, root: Path, card: BundleCard, settings: ServiceSettings) -> TorchBackend:
        """The backend the settings describe."""
        return cls(root, card, settings.variant, settings.device, settings.threads, settings.trust_remote_code,
                   settings.pack)

    def _packing(self, root: Path, card: BundleCard, required: bool, dtype: str) -> Any:
        """A :class:`~rewardmodel.torch_packed.PackedScorer` proven on :data:`PACKING_PROBES`, or None (logged) where
        the model does not pack; ``required``: refuse instead."""
        from rewardmodel.torch_packed import PackedScorer, why_not_packable
        from rewardmodel.torch_packing import kernels_for

        def refused(why: str) -> None:
            if required:
                raise BackendFailure(f"--pack on, but {root} does not pack: {why}; serve it with --pack off")
            log.warning("scoring padded batches: %s does not pack (%s)", root, why)

        if (why := why_not_packable(self._model, card.formatting.max_length)) is not None:
            return refused(why)
        formatter = Formatter(load_tokenizer(root), card.formatting)
        batch = pad_batch(formatter.encode_many(list(PACKING_PROBES)), card.formatting)
        padded = score_batch(self._score, batch, self._width, "torch")  # before the model's attention is switched
        attention = self._model.config._attn_implementation
        param = next(self._model.parameters())
        problems = []
        for kernel in kernels_for(param.device, param.dtype):  # the fastest that scores as padding does
            try:
                packed = PackedScorer(self._model, kernel)
                ours = score_batch(_numpy(packed), batch, self._width, "torch")
            except Exception as exc:  # a kernel this torch or device lacks, whatever the library raises
                problems.append(f"{kernel} failed on the probes: {exc}")
                continue
            error = float(np.abs(ours - padded).max() / max(float(np.abs(padded).max()), 1e-6))
            if error <= PACKING_TOLERANCE[dtype]:
                log.info("packing %s's batches (%s attention; probes agree within %.2g)", root, kernel, error)
                return packed
            problems.append(f"{kernel}'s packed scores differ from its padded ones by {error:.2g} of the largest "
                            f"score (at most {PACKING_TOLERANCE[dtype]:g} for {dtype})")
        self._model.model.set_attn_implementation(attention)  # padded batches as the model loaded
        return refused("; ".join(problems))

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row, computed without autograd (packed where the model packs)."""
        if self._packed is not None:
            return score_batch(_numpy(self._packed), batch, self._width, "torch")
        return score_batch(self._score, batch, self._width, "torch")

    @property
    def rows_error(self) -> str | None:
        """Why this model serves no read rows (None: it does)."""
        return self._rows_error

    def score_rows(self, batch: PaddedBatch) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Scores and read rows, without autograd."""
        if self._packed is not None and self._rows_error is None:
            return score_rows_batch(self._packed_rows, batch, self._width, "torch", None)
        return score_rows_batch(self._score_rows, batch, self._width, "torch", self._rows_error)

    def _packed_rows(self, batch: PaddedBatch) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        out, rows = self._packed.with_rows(batch)
        return out.float().cpu().numpy(), rows.float().cpu().numpy()

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


def _numpy(packed: Any) -> Any:
    """A :class:`~rewardmodel.torch_packed.PackedScorer` as a batch scorer returning NumPy."""
    return lambda batch: packed(batch).float().cpu().numpy()
