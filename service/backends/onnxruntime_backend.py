"""onnxruntime backend: CPU provider, CUDA provider, TensorRT provider when the installed build has them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rewardmodel import BundleCard, PaddedBatch, RewardModelError
from rewardmodel.onnx_model import (
    CPU,
    CUDA,
    TENSORRT,
    available_providers,
    onnx_row_scorer,
    onnx_scorer,
    open_session,
    variant_file,
)
from service.backends.base import BackendInfo, rows_of_variant, score_batch, score_rows_batch
from service.errors import BackendFailure
from service.settings import ServiceSettings


def choose_providers(device: str, tensorrt: bool, installed: list[str]) -> list[str]:
    """Execution providers for ``device``, best first; refuses a GPU request the installed build cannot serve."""
    if device == "cpu":
        return [CPU]
    if CUDA not in installed:
        raise BackendFailure(
            f"--device cuda needs onnxruntime with the CUDA provider; this one has {installed}. "
            "Install onnxruntime-gpu, or serve with --device cpu."
        )
    return ([TENSORRT] if tensorrt and TENSORRT in installed else []) + [CUDA, CPU]


def stream_threads(threads: int, streams: int) -> int:
    """Intra-op threads of each of ``streams`` concurrent runs sharing ``threads`` (0: the CPUs this process may
    use); 0 again for one stream, which lets onnxruntime choose."""
    if streams == 1:
        return threads
    return max(1, (threads or len(os.sched_getaffinity(0))) // streams)


class OnnxBackend:
    """Scores batches with one onnxruntime session over the bundle's exported ``variant``; with ``streams`` > 1,
    that many batches at once (a session's ``run`` is thread-safe), each on ``threads / streams`` intra-op
    threads."""

    pad_multiple = 1
    packs = False
    """onnxruntime runs any shape without preparing it: padding further only adds work."""

    def __init__(self, root: Path, card: BundleCard, variant: str, device: str, threads: int = 0,
                 tensorrt: bool = False, spin: bool = False, streams: int = 1) -> None:
        try:
            providers = choose_providers(device, tensorrt, available_providers())
            if device == "cuda":
                import onnxruntime as ort

                ort.preload_dlls()  # pip's CUDA/cuDNN libraries, found without LD_LIBRARY_PATH
            session = open_session(variant_file(root, card, variant), providers, stream_threads(threads, streams),
                                   spin)
        except RewardModelError as exc:
            raise BackendFailure(str(exc)) from exc
        self._session = session
        self._width = card.layout.width
        self._score = onnx_scorer(session)
        self._rows_error = rows_of_variant(card, variant)
        self._score_rows = onnx_row_scorer(session) if self._rows_error is None else None
        self.streams = streams
        active = session.get_providers()
        if device == "cuda" and CUDA not in active:
            raise BackendFailure(f"onnxruntime fell back to {active}: the CUDA provider failed to start (see the "
                                 "log above for the missing library)")
        self.info = BackendInfo("onnx", device, card.onnx[variant].get("dtype", variant), ",".join(active))

    @classmethod
    def from_settings(cls, root: Path, card: BundleCard, settings: ServiceSettings) -> OnnxBackend:
        """The backend the settings describe."""
        return cls(root, card, settings.variant, settings.device, settings.threads, settings.tensorrt,
                   settings.onnx_spin, settings.streams)

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row."""
        return score_batch(self._score, batch, self._width, "onnxruntime")

    @property
    def rows_error(self) -> str | None:
        """Why this variant serves no read rows (None: it does)."""
        return self._rows_error

    def score_rows(self, batch: PaddedBatch) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Scores and read rows."""
        return score_rows_batch(self._score_rows, batch, self._width, "onnxruntime", self._rows_error)

    def health(self) -> None:
        """A session that loaded stays usable; nothing to probe."""

    def close(self) -> None:
        """Drop the session (onnxruntime frees its memory with it)."""
        del self._session
