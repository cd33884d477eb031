"""The parity gate: a variant is written only if its scores agree with the torch model's.

Figures, on the same encoded real pairs for the torch fp32 reference and the variant:

* ``max_abs_diff`` / ``mean_abs_diff`` of scores,
* ``spearman`` rank correlation of all scores,
* ``pair_agreement``: the fraction of pairs whose chosen-vs-rejected order is the same under both
  (a tie on one side and not the other counts as a disagreement).

Thresholds (``THRESHOLDS``), chosen from what each numeric format can promise:

======= ============== ================
variant max_abs_diff   pair_agreement
======= ============== ================
fp32    ≤ 1e-4         ≥ 0.995
fp16    ≤ 5e-2         ≥ 0.99
int8    —              ≥ 0.98
======= ============== ================

int8-static is held to int8's thresholds.

The read rows (the graph's ``hidden`` output, what personal rewards are computed from) are measured too, by their
mean relative error ``‖row − reference‖ / ‖reference‖`` (``ROW_THRESHOLDS``; the worst row is reported: int8's
is far off on a few rows, 0.71 on the demo model, while its mean is 0.065 and every pair keeps its order).
Rows that miss it do not stop the variant's scores from serving; the card records it, and personal rewards are
refused on that variant.

Spearman is reported but not gated: over a model whose scores cluster (a small model, or one that
scores most completions alike) tiny, harmless differences reorder near-ties and sink it (a tiny test
model's int8 variant: Spearman 0.82 with every pair decision unchanged), while pair agreement is what
a PPO trainer or a reranker actually relies on.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from export.errors import ExportError, ParityError
from rewardmodel import PreferenceExample
from rewardmodel.metrics import pearson, rankdata


@dataclass(frozen=True)
class Thresholds:
    """Limits a variant must meet; ``None`` means not gated on that figure."""

    max_abs_diff: float | None
    pair_agreement: float


THRESHOLDS = {
    "fp32": Thresholds(max_abs_diff=1e-4, pair_agreement=0.995),
    "fp16": Thresholds(max_abs_diff=5e-2, pair_agreement=0.99),
    "int8": Thresholds(max_abs_diff=None, pair_agreement=0.98),
    "int8-static": Thresholds(max_abs_diff=None, pair_agreement=0.98),
}


ROW_THRESHOLDS = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1, "int8-static": 0.1}
"""The mean relative error of a variant's read rows that personal rewards accept."""


@dataclass(frozen=True)
class RowParity:
    """Agreement of a variant's read rows with the torch reference's."""

    max_rel_error: float
    mean_rel_error: float
    min_cosine: float
    passed: bool

    @classmethod
    def of(cls, reference: npt.NDArray[np.float64], variant: npt.NDArray[np.float64], name: str) -> RowParity:
        """The figures of ``variant`` rows ``(n, H)`` against ``reference``, gated by ``name``'s threshold."""
        norms = np.linalg.norm(reference, axis=1)
        rel = np.linalg.norm(variant - reference, axis=1) / np.maximum(norms, 1e-12)
        cosine = (variant * reference).sum(axis=1) / np.maximum(norms * np.linalg.norm(variant, axis=1), 1e-12)
        return cls(float(rel.max()), float(rel.mean()), float(cosine.min()),
                   bool(rel.mean() <= ROW_THRESHOLDS[name]))

    def to_dict(self) -> dict[str, float | bool]:
        """JSON-ready figures."""
        return asdict(self)


@dataclass(frozen=True)
class Parity:
    """Agreement of a variant's scores with the torch reference."""

    items: int
    pairs: int
    max_abs_diff: float
    mean_abs_diff: float
    spearman: float
    pair_agreement: float

    def failures(self, limits: Thresholds) -> list[str]:
        """Human-readable list of missed thresholds (empty: passed)."""
        out = []
        if limits.max_abs_diff is not None and self.max_abs_diff > limits.max_abs_diff:
            out.append(f"max_abs_diff {self.max_abs_diff:.3g} > {limits.max_abs_diff:g}")
        if self.pair_agreement < limits.pair_agreement:
            out.append(f"pair_agreement {self.pair_agreement:.4f} < {limits.pair_agreement:g}")
        return out

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready figures."""
        return asdict(self)


def pair_index(examples: Sequence[PreferenceExample], criterion: str = ""
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Flat indices (better, worse) of every pair, with completions flattened example by example: the
    examples' pairs, or ``criterion``'s; where the data hold none (criteria rated, not ranked), every two
    completions of one prompt, whose order is what a reranker relies on."""
    better: list[int] = []
    worse: list[int] = []
    offset = 0
    for ex in examples:
        pairs = [(p.better, p.worse) for p in ex.criterion_pairs if p.name == criterion] if criterion else \
            [(p.better, p.worse) for p in ex.pairs]
        better.extend(offset + b for b, _ in pairs)
        worse.extend(offset + w for _, w in pairs)
        offset += len(ex.completions)
    if not better:
        offset = 0
        for ex in examples:
            for b, w in itertools.combinations(range(len(ex.completions)), 2):
                better.append(offset + b)
                worse.append(offset + w)
            offset += len(ex.completions)
    if not better:
        raise ExportError("the calibration data hold no two completions of one prompt: pair agreement cannot be "
                          "measured; pass --calibration-data with pairs or rankings")
    return np.asarray(better), np.asarray(worse)


def measure(reference: npt.NDArray[np.float64], variant: npt.NDArray[np.float64],
            examples: Sequence[PreferenceExample], criterion: str = "") -> Parity:
    """Parity figures of ``variant`` against ``reference`` (flat scores, completions in example order) on the
    examples' pairs, or ``criterion``'s (see :func:`pair_index`)."""
    better, worse = pair_index(examples, criterion)
    diff = np.abs(reference - variant)
    agree = np.sign(reference[better] - reference[worse]) == np.sign(variant[better] - variant[worse])
    return Parity(
        items=len(reference), pairs=len(better), max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
        spearman=pearson(rankdata(reference), rankdata(variant)), pair_agreement=float(agree.mean()),
    )


def gate(variant: str, parity: Parity, force: bool, output: str = "") -> list[str]:
    """Raise :class:`ParityError` with the figures unless ``variant`` passes or ``force``; returns failures.
    ``output`` names the criterion gated (empty: the reward)."""
    failures = parity.failures(THRESHOLDS[variant])
    if failures and not force:
        what = f"variant's {output} output" if output else "variant"
        raise ParityError(
            f"{variant} {what} failed the parity gate ({'; '.join(failures)}) on {parity.items} scores / "
            f"{parity.pairs} pairs: {parity.to_dict()}. It was not written; --force writes it anyway."
        )
    return failures
