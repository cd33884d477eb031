"""OpenVINO backend: an exported ONNX variant compiled for the CPU (the static int8 variant's int8 kernels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from rewardmodel import BundleCard, PaddedBatch, RewardModelError
from rewardmodel.onnx_model import variant_file
from rewardmodel.openvino_model import Precision, compile_onnx, openvino_scorers
from service.backends.base import BackendInfo, rows_of_variant, score_batch, score_rows_batch
from service.errors import BackendFailure
from service.settings import ServiceSettings

PAD_MULTIPLE = 16
"""OpenVINO's CPU plugin prepares each new input shape (shape inference, memory, kernels) before running it;
padding lengths to a multiple of 16 leaves a few distinct shapes, and served it 7-28 % faster on 64 one-item
clients (5 A/B pairs of runs) for a little more padding."""


class OpenVinoBackend:
    """Scores batches with one OpenVINO compiled model of the bundle's exported ``variant``, ``streams`` at once."""

    pad_multiple = PAD_MULTIPLE
    packs = False

    def __init__(self, root: Path, card: BundleCard, variant: str, device: str, threads: int = 0,
                 precision: Precision = "f32", streams: int = 1) -> None:
        if device != "cpu":
            raise BackendFailure("the openvino backend serves on --device cpu; on NVIDIA GPUs use --backend onnx")
        try:
            self._compiled = compile_onnx(variant_file(root, card, variant), threads, precision, streams)
        except RewardModelError as exc:
            raise BackendFailure(str(exc)) from exc
        self._score, score_rows = openvino_scorers(self._compiled, streams)
        self._rows_error = rows_of_variant(card, variant)
        self._score_rows = score_rows if self._rows_error is None else None
        self.streams = streams
        self._width = card.layout.width
        detail = f"CPU, {precision} inference precision" + (f", {streams} streams" if streams > 1 else "")
        self.info = BackendInfo("openvino", device, card.onnx[variant].get("dtype", variant), detail)

    @classmethod
    def from_settings(cls, root: Path, card: BundleCard, settings: ServiceSettings) -> OpenVinoBackend:
        """The backend the settings describe."""
        return cls(root, card, settings.variant, settings.device, settings.threads, settings.openvino_precision,
                   settings.streams)

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row (one per criterion for a criteria model)."""
        return score_batch(self._score, batch, self._width, "OpenVINO")

    @property
    def rows_error(self) -> str | None:
        """Why this variant serves no read rows (None: it does)."""
        return self._rows_error

    def score_rows(self, batch: PaddedBatch) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Scores and read rows."""
        return score_rows_batch(self._score_rows, batch, self._width, "OpenVINO", self._rows_error)

    def health(self) -> None:
        """A compiled model stays usable; nothing to probe."""

    def close(self) -> None:
        """Drop the compiled model (OpenVINO frees its memory with it)."""
        del self._score, self._compiled
