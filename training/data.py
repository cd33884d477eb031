"""Training data: the held-out split and the criteria the data name (reading data is
:mod:`rewardmodel.sources`)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from rewardmodel import DataError, PreferenceExample
from rewardmodel.criteria import Criteria, parse_weights_flag


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


def criteria_of(examples: Sequence[PreferenceExample], weights: str) -> Criteria | None:
    """The criteria the training data rate or rank (sorted by name: the head's output order), their scales
    and the reward's weights (``weights`` as ``name=w,…``; empty: equal); None when the data name none."""
    names = sorted({x.name for e in examples for x in e.criteria}
                   | {p.name for e in examples for p in e.criterion_pairs})
    if not names:
        if weights:
            raise DataError("config", "criteria_weights was given, but the training data name no criteria")
        return None
    scales: dict[str, tuple[float, float] | None] = dict.fromkeys(names)
    for e in examples:
        for x in e.criteria:
            seen = scales[x.name]
            if seen is not None and seen != x.scale:
                raise DataError(e.where, f"criterion {x.name!r} is rated on {list(x.scale)} here and on "
                                         f"{list(seen)} elsewhere: one criterion needs one scale")
            scales[x.name] = x.scale
    try:
        chosen = parse_weights_flag(weights, names) if weights else {n: 1 / len(names) for n in names}
    except ValueError as exc:
        raise DataError("config", f"criteria_weights: {exc}") from None
    return Criteria(tuple(names), scales, chosen)
