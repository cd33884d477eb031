"""The backend protocol: what the scheduler needs from a model runtime, and nothing more.

A backend scores one padded batch at a time on the scheduler's backend thread. It translates its
library's exceptions into :class:`~service.errors.BackendFailure` here, at the boundary, so nothing
above it knows onnxruntime or torch exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rewardmodel import PaddedBatch


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is: reported by ``/v1/models`` and the ``model_info`` metric."""

    name: str
    """``onnx``, ``openvino`` or ``torch``."""
    device: str
    dtype: str
    detail: str = ""
    """Execution providers (onnx) or attention implementation (torch)."""


class Backend(Protocol):
    """A loaded model that scores padded batches."""

    info: BackendInfo

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row of ``batch``, shape ``(rows,)``, or for a criteria model one per criterion,
        ``(rows, C)``; may contain NaN (the scheduler checks)."""
        ...

    def health(self) -> None:
        """Raise :class:`BackendFailure` if the backend can no longer score."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...
