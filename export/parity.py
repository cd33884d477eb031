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

Spearman is reported but not gated: over a model whose scores cluster (a small model, or one that
scores most completions alike) tiny, harmless differences reorder near-ties and sink it (a tiny test
model's int8 variant: Spearman 0.82 with every pair decision unchanged), while pair agreement is what
a PPO trainer or a reranker actually relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from export.errors import ParityError
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
}


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


def pair_index(examples: Sequence[PreferenceExample]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Flat indices (better, worse) of every pair, with completions flattened example by example."""
    better: list[int] = []
    worse: list[int] = []
    offset = 0
    for ex in examples:
        better.extend(offset + p.better for p in ex.pairs)
        worse.extend(offset + p.worse for p in ex.pairs)
        offset += len(ex.completions)
    return np.asarray(better), np.asarray(worse)


def measure(reference: npt.NDArray[np.float64], variant: npt.NDArray[np.float64],
            examples: Sequence[PreferenceExample]) -> Parity:
    """Parity figures of ``variant`` against ``reference`` (flat scores, completions in example order)."""
    better, worse = pair_index(examples)
    diff = np.abs(reference - variant)
    agree = np.sign(reference[better] - reference[worse]) == np.sign(variant[better] - variant[worse])
    return Parity(
        items=len(reference), pairs=len(better), max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
        spearman=pearson(rankdata(reference), rankdata(variant)), pair_agreement=float(agree.mean()),
    )


def gate(variant: str, parity: Parity, force: bool) -> list[str]:
    """Raise :class:`ParityError` with the figures unless ``variant`` passes or ``force``; returns failures."""
    failures = parity.failures(THRESHOLDS[variant])
    if failures and not force:
        raise ParityError(
            f"{variant} variant failed the parity gate ({'; '.join(failures)}) on {parity.items} scores / "
            f"{parity.pairs} pairs: {parity.to_dict()}. It was not written; --force writes it anyway."
        )
    return failures
