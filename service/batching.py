"""How batches are cut, as pure functions of item lengths: what the scheduler does, and what the
benchmark's in-process ceiling reuses so that both cut the same batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """How batches are cut and how much work the process admits."""

    max_batch_tokens: int
    max_batch_items: int
    max_queue_items: int
    max_wait_s: float = 0.0
    sort_window: int = 1024
    max_padding: float = 1.0
    """A batch stops growing when the next item would make more than this share of it padding, once it
    holds ``EFFICIENT_TOKENS``; 1.0: grow to the limits whatever the padding."""
    stall_s: float = 30.0
    """A batch running longer than this (and than ``STALL_FACTOR`` × its expected time) is stalled."""
    pad_multiple: int = 1
    """The backend pads a batch's length up to a multiple of this: the token limit counts the rounded length
    (the scheduler sets it from its backend)."""
    packed: bool = False
    """The backend packs a batch's items into one sequence (:mod:`rewardmodel.torch_packing`): it computes no
    padding, so the token limit counts real tokens and ``max_padding`` does not apply (set from the backend)."""


EFFICIENT_TOKENS = 512
"""Padded tokens below which a batch grows whatever its padding: the GEMMs of smaller batches run far
below the CPU's peak, so splitting them saves less than it costs."""


def batch_end(lengths: Sequence[int], lo: int, limits: BatchLimits) -> int:
    """Where the batch starting at ``lo`` of ascending ``lengths`` ends (exclusive): it grows while it stays
    under the token and item limits (counting the backend's rounding, so a padded batch never passes
    ``max_batch_tokens``) and, past ``EFFICIENT_TOKENS``, under ``max_padding`` (of the longest item: the
    rounding is paid whatever the cut, so it does not shrink batches). A packing backend's batch counts its real
    tokens only."""
    hi, real, multiple = lo + 1, lengths[lo], limits.pad_multiple
    while hi < len(lengths) and hi - lo < limits.max_batch_items:
        length = lengths[hi]
        if limits.packed:
            if real + length > limits.max_batch_tokens:
                break
            real += length
            hi += 1
            continue
        padded = (hi - lo + 1) * length
        if (hi - lo + 1) * -(-length // multiple) * multiple > limits.max_batch_tokens or (
                padded > EFFICIENT_TOKENS and 1 - (real + length) / padded > limits.max_padding):
            break
        real += length
        hi += 1
    return hi


def window_cut(lengths: Sequence[int], limits: BatchLimits) -> list[int]:
    """The next batch of a window of queued items, as positions in the window (ascending; 0 is the oldest).

    The window is sorted by length and cut into consecutive batches from the shortest item up (what
    offline scoring does); the batch holding the oldest item is the one returned. Batches stay tight, the
    rest of the window stays cut the same way for the next call, and the oldest item never waits behind
    newer ones.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    oldest = order.index(0)
    ascending = [lengths[i] for i in order]
    lo = 0
    while (hi := batch_end(ascending, lo, limits)) <= oldest:
        lo = hi
    return sorted(order[lo:hi])
