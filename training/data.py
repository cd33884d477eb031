"""Training data: the held-out split (reading data is :mod:`rewardmodel.sources`)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from rewardmodel import DataError, PreferenceExample


def split_heldout(
    examples: Sequence[PreferenceExample], fraction: float, seed: int
) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """Deterministically hold out ``fraction`` of the examples: (train, heldout)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_held = round(len(examples) * fraction)
    if fraction > 0 and (n_held == 0 or n_held == len(examples)):
        raise DataError("data", f"cannot hold out {fraction:.0%} of {len(examples)} examples; give --eval-data")
    held = set(order[:n_held])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]
