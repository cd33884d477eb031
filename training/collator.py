"""Encoding preference examples and collating them so one forward pass scores every completion.

An encoded example holds each of its completions once; a batch stacks the completions of all its
examples (example 0's completions first, then example 1's, …) and lists the pairs as row indices into
that stack. A chosen/rejected pair is two rows; a k-way ranking is k rows and C(k, 2) pairs. Pointwise
labels (thumbs, ratings) are row indices too, with their targets in [0, 1]; so are a criteria model's
per-criterion ratings and pairs, with the column of their criterion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rewardmodel import EncodedInput, Formatter, PreferenceExample, pad_batch

Feature = dict[str, Any]
CRITERIA_KEYS = ("crit_row", "crit_col", "crit_target", "cpair_better", "cpair_worse", "cpair_col")
ROW_KEYS = ("crit_row", "cpair_better", "cpair_worse")
"""Criteria fields that index rows (shifted by the example's offset in the batch); the others are columns
and targets."""


def encode_example(formatter: Formatter, example: PreferenceExample, criteria: Sequence[str] = ()) -> Feature:
    """One training feature: token ids of each completion (with the prompt), the pairs and the labels;
    ``criteria`` names the head's outputs in order (a criterion it does not name is not trained)."""
    encoded = formatter.encode_many([(example.prompt, c) for c in example.completions])
    column = {name: i for i, name in enumerate(criteria)}
    rated = [x for x in example.criteria if x.name in column]
    ranked = [p for p in example.criterion_pairs if p.name in column]
    return {
        "input_ids": [e.input_ids for e in encoded],
        "token_type_ids": [e.token_type_ids or [] for e in encoded],
        "better": [p.better for p in example.pairs],
        "worse": [p.worse for p in example.pairs],
        "margin": [p.margin for p in example.pairs],
        "pair_weight": [p.weight for p in example.pairs],
        "point": [p.index for p in example.points],
        "target": [p.target for p in example.points],
        "crit_row": [x.index for x in rated],
        "crit_col": [column[x.name] for x in rated],
        "crit_target": [x.target for x in rated],
        "cpair_better": [p.better for p in ranked],
        "cpair_worse": [p.worse for p in ranked],
        "cpair_col": [column[p.name] for p in ranked],
        "length": sum(len(e.input_ids) for e in encoded),
        "truncated": sum(e.truncated for e in encoded),
    }


def encode_examples(formatter: Formatter, examples: Sequence[PreferenceExample],
                    criteria: Sequence[str] = ()) -> list[Feature]:
    """Encode many examples (see :func:`encode_example`)."""
    return [encode_example(formatter, ex, criteria) for ex in examples]


@dataclass(frozen=True)
class RewardCollator:
    """Collate encoded examples into model inputs plus pair indices, margins and weights."""

    formatter: Formatter
    pad_to_multiple_of: int = 1

    def __call__(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        items: list[EncodedInput] = []
        better: list[int] = []
        worse: list[int] = []
        margin: list[float] = []
        weight: list[float] = []
        point: list[int] = []
        target: list[float] = []
        crit: dict[str, list[float]] = {k: [] for k in CRITERIA_KEYS}
        for feature in features:
            offset = len(items)
            for ids, types in zip(feature["input_ids"], feature["token_type_ids"], strict=True):
                items.append(EncodedInput(list(ids), list(types) or None, 0, 0, False))
            n_pairs = len(feature["better"])
            better.extend(offset + i for i in feature["better"])
            worse.extend(offset + i for i in feature["worse"])
            margin.extend(float(m) for m in feature["margin"])
            # a ranking counts as one example (each of its pairs 1/n); an implicit signal's pair counts its weight
            weight.extend(w / max(n_pairs, 1) for w in feature.get("pair_weight", [1.0] * n_pairs))
            point.extend(offset + i for i in feature["point"])
            target.extend(float(t) for t in feature["target"])
            for key in CRITERIA_KEYS:
                shift = offset if key in ROW_KEYS else 0
                crit[key].extend(v + shift for v in feature.get(key, []))
        batch = {k: torch.from_numpy(v) for k, v in
                 pad_batch(items, self.formatter.spec, self.pad_to_multiple_of).as_dict().items()}
        batch["better"] = torch.tensor(better, dtype=torch.long)
        batch["worse"] = torch.tensor(worse, dtype=torch.long)
        batch["margin"] = torch.tensor(margin, dtype=torch.float32)
        batch["pair_weight"] = torch.tensor(weight, dtype=torch.float32)
        # what the weighted pair loss is divided by: examples, not weights (a weak pair must count less)
        batch["pair_examples"] = torch.tensor(float(sum(1 for f in features if f["better"])), dtype=torch.float32)
        batch["point"] = torch.tensor(point, dtype=torch.long)
        batch["point_target"] = torch.tensor(target, dtype=torch.float32)
        for key, values in crit.items():
            batch[key] = torch.tensor(values, dtype=torch.float32 if key == "crit_target" else torch.long)
        return batch
