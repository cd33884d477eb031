"""Named criteria: a multi-attribute reward model's outputs, their data forms and how they make one reward.

A criteria bundle's head has one output per criterion (helpfulness, correctness, …; ArmoRM and the
HelpSteer-trained models work this way). Its card lists them with their rating scales and the default
weights of the scalar reward, ``r = Σ w_c · r_c``. Training, export, evaluation and serving all read the
criteria from here, so they agree on the order of the outputs and on what a weight may be.

Data (docs/design.md §2 extended)::

    {"prompt", "completion", "criteria": {"helpfulness": 3, …}, "scale": [0, 4]}         one reply
    {"prompt", "completions": [...], "criteria": {"helpfulness": [3, null, …]}, "scale": [0, 4]}
    {"prompt", "completions": [...], "criteria_rankings": {"helpfulness": [best … worst]}}

Ratings become labels on [0, 1] of their scale; the ratings of one prompt also order its replies per
criterion (a pair for every two that differ), as the scores form does for the scalar reward.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MAX_CRITERIA = 32


@dataclass(frozen=True)
class CriterionLabel:
    """A rating of completion ``index`` on criterion ``name``: ``target`` in [0, 1] of ``scale``."""

    index: int
    name: str
    target: float
    scale: tuple[float, float]


@dataclass(frozen=True)
class CriterionPair:
    """On criterion ``name``, completion ``better`` beats ``worse``."""

    name: str
    better: int
    worse: int


@dataclass(frozen=True)
class Criteria:
    """The card's criteria: output ``i`` of the head is ``names[i]``."""

    names: tuple[str, ...]
    scales: dict[str, tuple[float, float] | None]
    """Each criterion's rating scale in the training data (None: it was ranked only)."""
    weights: dict[str, float]
    """Default weights of the scalar reward."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Criteria:
        """Parse the card's record; raises ``ValueError`` saying what is wrong."""
        names = tuple(data["names"])
        scales = {n: (tuple(s) if s is not None else None) for n, s in data["scales"].items()}
        criteria = cls(names, scales, check_weights(data["weights"], names))  # type: ignore[arg-type]
        if set(criteria.weights) != set(names):
            raise ValueError("the criteria's weights must name every criterion once")
        return criteria

    def weight_vector(self, override: Mapping[str, float] | None = None) -> list[float]:
        """Weights in output order: the card's defaults, with ``override``'s names replaced."""
        weights = {**self.weights, **(override or {})}
        return [weights[n] for n in self.names]


def check_weights(weights: Any, names: Sequence[str]) -> dict[str, float]:
    """``weights`` as {known name: finite number}; raises ``ValueError`` naming what is wrong."""
    if not isinstance(weights, Mapping):
        raise ValueError("'weights' must be an object of criterion name to number")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"unknown criteria {unknown} in 'weights'; this model's criteria are {list(names)}")
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"weights.{name} must be a finite number, got {value!r}")
    return {n: float(v) for n, v in weights.items()}


def parse_weights_flag(text: str, names: Sequence[str]) -> dict[str, float]:
    """``"helpfulness=0.5,correctness=0.3"`` as weights; names left out keep weight 0."""
    weights: dict[str, float] = dict.fromkeys(names, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"criteria weight {part!r} is not name=number") from None
    return {**weights, **check_weights(weights, names)}


def finite(value: Any) -> bool:
    """A JSON number that is finite (``true`` is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_scale(row: Mapping[str, Any]) -> tuple[float, float]:
    """The row's ``scale``: [lo, hi] with lo < hi; raises ``ValueError`` otherwise. Ratings and criteria share it."""
    scale = row.get("scale")
    if not (isinstance(scale, list) and len(scale) == 2 and all(finite(v) for v in scale) and scale[0] < scale[1]):
        raise ValueError(f"field 'scale' must be [lo, hi] with lo < hi, got {scale!r}")
    return float(scale[0]), float(scale[1])


def pairs_by_mean(rated: Mapping[int, Sequence[float]]) -> list[tuple[int, int]]:
    """(better, worse) for every two completions whose mean ratings differ: the one reading of ratings as
    preferences, for a prompt's overall ratings and for each criterion's."""
    mean = {i: sum(v) / len(v) for i, v in rated.items()}
    return [(i, j) if mean[i] > mean[j] else (j, i)
            for i, j in itertools.combinations(sorted(mean), 2) if mean[i] != mean[j]]


def criteria_block(block: Any, field: str) -> Mapping[str, Any]:
    """``block`` checked as an object of criterion name to its judgements."""
    if not isinstance(block, Mapping) or not block:
        raise ValueError(f"field '{field}' must be an object of criterion name to ratings")
    if len(block) > MAX_CRITERIA or not all(isinstance(n, str) and n for n in block):
        raise ValueError(f"field '{field}' must name at most {MAX_CRITERIA} criteria, each a non-empty string")
    return block


def criterion_labels(row: Mapping[str, Any], k: int) -> list[CriterionLabel]:
    """The per-criterion ratings of a row with ``k`` completions (``criteria``: a number each for one
    completion, a list of k numbers or nulls for several)."""
    if "criteria" not in row:
        return []
    scale = read_scale(row)
    labels = []
    for name, values in criteria_block(row["criteria"], "criteria").items():
        ratings = [values] if k == 1 and not isinstance(values, list) else values
        if not isinstance(ratings, list) or len(ratings) != k:
            raise ValueError(f"criteria.{name} must hold {k} rating(s), one per completion (null: not rated)")
        for i, x in enumerate(ratings):
            if x is None:
                continue
            if not finite(x) or not scale[0] <= x <= scale[1]:
                raise ValueError(f"criteria.{name}[{i}] must be a number within the scale {list(scale)}, got {x!r}")
            labels.append(CriterionLabel(i, name, (x - scale[0]) / (scale[1] - scale[0]), scale))
    return labels


def rated_pairs(labels: Iterable[CriterionLabel]) -> list[CriterionPair]:
    """Per criterion, a pair for every two completions whose mean ratings differ."""
    by_name: dict[str, dict[int, list[float]]] = {}
    for label in labels:
        by_name.setdefault(label.name, {}).setdefault(label.index, []).append(label.target)
    return [CriterionPair(name, better, worse) for name, rated in by_name.items()
            for better, worse in pairs_by_mean(rated)]
