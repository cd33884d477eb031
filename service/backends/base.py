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
from service.errors import BackendFailure


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is: reported by ``/v1/models`` and the ``model_info`` metric."""

    name: str
    """``onnx`` or ``torch``."""
    device: str
    dtype: str
    detail: str = ""
    """Execution providers (onnx) or attention implementation (torch)."""


class Backend(Protocol):
    """A loaded model that scores padded batches."""

    info: BackendInfo

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row of ``batch``, shape ``(rows,)``; may contain NaN (the scheduler checks)."""
        ...

    def health(self) -> None:
        """Raise :class:`BackendFailure` if the backend can no longer score."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


def one_score_per_row(raw: object, rows: int) -> npt.NDArray[np.float64]:
    """``raw`` as a ``(rows,)`` float array; a reward model that returns anything else is a bug we name."""
    out = np.asarray(raw, dtype=np.float64)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (rows,):
        raise BackendFailure(f"the model must return one score per item: {rows} in, shape {out.shape} out; "
                             "is its head a single-output (num_labels=1) score head?")
    return out
