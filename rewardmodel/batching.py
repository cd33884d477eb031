"""Padding encoded inputs into rectangular batches, and where each item's score is read.

Pure NumPy so that the training collator, the export parity check and the service batcher share it
without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from rewardmodel.formatting import EncodedInput, FormatSpec


@dataclass(frozen=True)
class PaddedBatch:
    """A padded batch: ``input_ids`` and ``attention_mask`` always, ``token_type_ids`` for pair models, and
    ``positions`` for heads read at explicit positions (the spec's ``read``, a gate's, the step tags; -1: none)."""

    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]
    token_type_ids: npt.NDArray[np.int64] | None
    positions: npt.NDArray[np.int64] | None = None

    def as_dict(self) -> dict[str, npt.NDArray[np.int64]]:
        """The model's keyword arguments."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        if self.positions is not None:
            out["positions"] = self.positions
        return out

    @property
    def padding_ratio(self) -> float:
        """Fraction of the batch's cells that are padding."""
        return 1.0 - float(self.attention_mask.mean()) if self.attention_mask.size else 0.0


def pad_batch(items: Sequence[EncodedInput], spec: FormatSpec, pad_to_multiple_of: int = 1) -> PaddedBatch:
    """Pad ``items`` to the longest one (rounded up to ``pad_to_multiple_of``, but never past the card's
    ``max_length``: the model may have no positions beyond it) on the card's padding side."""
    if not items:
        raise ValueError("pad_batch needs at least one item")
    longest = max(len(it.input_ids) for it in items)
    width = max(longest, min(-(-longest // pad_to_multiple_of) * pad_to_multiple_of, spec.max_length))
    ids = np.full((len(items), width), spec.pad_token.id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64) if spec.use_token_type_ids else None
    left = spec.padding_side == "left"
    for row, it in enumerate(items):
        n = len(it.input_ids)
        cols = slice(width - n, width) if left else slice(0, n)
        ids[row, cols] = it.input_ids
        mask[row, cols] = 1
        if types is not None and it.token_type_ids is not None:
            types[row, cols] = it.token_type_ids
    return PaddedBatch(ids, mask, types, read_positions(items, ids, mask, spec))


def read_positions(items: Sequence[EncodedInput], ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64],
                   spec: FormatSpec) -> npt.NDArray[np.int64] | None:
    """Where a head read at explicit positions reads each (right-padded) row: ``(rows, 1)`` the score's
    position; ``(rows, 2)`` it and the gate's; ``(rows, max_steps)`` the step tags', -1 past the last. None when
    the model reads its own."""
    width = spec.positions_width
    if width == 0:
        return None
    out = np.full((len(items), width), -1, dtype=np.int64)
    if spec.steps is not None:
        for row, it in enumerate(items):
            out[row, :len(it.marks)] = it.marks
        return out
    if spec.read == "first_pad":  # argmax of "is pad" finds the first one (0 where none), then one before it
        out[:, 0] = ((ids == spec.pad_token.id).argmax(axis=1) - 1) % ids.shape[1]
    else:
        real = mask.astype(bool) if spec.read == "last_mask" else ids != spec.pad_token.id
        # an all-pad row (pad = EOS, a text of EOS only) reads column 0, as transformers' argmax over it does
        out[:, 0] = edge_columns(real, "last").clip(min=0)
    if spec.gate_pattern:
        out[:, 1] = [it.marks[0] for it in items]
    return out


def score_positions(attention_mask: npt.NDArray[np.int64], spec: FormatSpec) -> npt.NDArray[np.int64]:
    """Column of each row's score when the model reads its own: its first real token (encoders) or last real
    token (decoders)."""
    return edge_columns(attention_mask.astype(bool), "first" if spec.score_position == "first" else "last")


def edge_columns(real: npt.NDArray[np.bool_], which: Literal["first", "last"]) -> npt.NDArray[np.int64]:
    """Each row's first or last column where ``real`` holds (a row with none: past the end for first, -1 for
    last)."""
    cols = np.arange(real.shape[1])
    if which == "first":
        return np.where(real, cols, real.shape[1]).min(axis=1)
    return np.where(real, cols, -1).max(axis=1)
