"""The backend protocol: what the scheduler needs from a model runtime, and nothing more.

A backend scores padded batches on the scheduler's backend thread, one at a time, or ``streams`` at once
from as many threads when it says it can (each stream then runs on its share of the cores). It translates its
library's exceptions into :class:`~service.errors.BackendFailure` here, at the boundary, so nothing
above it knows onnxruntime or torch exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rewardmodel import BundleCard, PaddedBatch, RewardModelError
from rewardmodel.scoring import BatchScorer, RowScorer, model_outputs
from service.errors import BackendFailure


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
    streams: int
    """Batches it scores at once, each from its own thread (1: calls never overlap)."""
    pad_multiple: int
    """Batches are padded to a length that is a multiple of this (1: to the longest item)."""
    packs: bool
    """It computes a batch's real tokens only (packed): the scheduler's token limit counts those."""

    def score(self, batch: PaddedBatch) -> npt.NDArray[np.float64]:
        """One score per row of ``batch``, shape ``(rows,)``, or for a criteria model one per criterion,
        ``(rows, C)``; may contain NaN (the scheduler checks)."""
        ...

    @property
    def rows_error(self) -> str | None:
        """Why this backend cannot return read rows for personal rewards (None: it can)."""
        ...

    def score_rows(self, batch: PaddedBatch) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """:meth:`score`'s outputs, and each row's read row ``(rows, H)`` (:mod:`rewardmodel.personal`)."""
        ...

    def health(self) -> None:
        """Raise :class:`BackendFailure` if the backend can no longer score."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


def score_batch(score: BatchScorer, batch: PaddedBatch, width: int, runtime: str,
                ) -> npt.NDArray[np.float64]:
    """``score(batch)`` in the protocol's shape, ``(rows,)`` or ``(rows, width)`` for a criteria model, with the
    runtime's exceptions (``runtime`` names it in the message) translated into :class:`BackendFailure`: the
    boundary every backend shares."""
    with _translated(batch, runtime):
        return _shaped(score(batch), batch, width)


def score_rows_batch(score: RowScorer | None, batch: PaddedBatch, width: int, runtime: str, why_not: str | None
                     ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``score(batch)``'s (outputs in the protocol's shape, read rows), translated as :func:`score_batch` does;
    ``why_not`` (with ``score`` None) is why the backend has no rows."""
    if score is None:
        raise BackendFailure(why_not or f"the {runtime} backend returns no read rows")
    with _translated(batch, runtime):
        outputs, rows = score(batch)
        return _shaped(outputs, batch, width), np.asarray(rows, dtype=np.float64)


def _shaped(raw: object, batch: PaddedBatch, width: int) -> npt.NDArray[np.float64]:
    outputs = model_outputs(raw, batch.input_ids.shape[0], width)
    return outputs[:, 0] if width == 1 else outputs


@contextmanager
def _translated(batch: PaddedBatch, runtime: str) -> Iterator[None]:
    """The runtime's exceptions as :class:`BackendFailure`."""
    try:
        yield
    except RewardModelError as exc:
        raise BackendFailure(str(exc)) from exc
    except Exception as exc:  # the runtimes raise untyped errors (out of memory, bad ids, …)
        raise BackendFailure(f"{runtime} failed on a batch of {tuple(batch.input_ids.shape)}: {exc}") from exc


def rows_of_variant(card: BundleCard, variant: str) -> str | None:
    """Why an exported ``variant``'s read rows cannot serve personal rewards (None: they can)."""
    rows = card.onnx.get(variant, {}).get("rows")
    if rows is None:
        return (f"the {variant} export has no read rows: re-export the bundle (rewardserve export) to serve personal "
                "rewards with it")
    if not rows.get("passed", False):
        return (f"the {variant} export's read rows failed their parity gate (mean relative error "
                f"{rows.get('mean_rel_error', float('nan')):.3g}): serve personal rewards with fp32 or torch")
    return None
