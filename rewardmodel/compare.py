"""Comparing two reward models on the same preference pairs: the promotion gate's statistics.

Both models decide every pair; the difference in accuracy gets a paired-bootstrap interval (the same
pairs are resampled for both models, so the interval reflects their disagreements, not the sampling of
easy and hard pairs). The gate is a non-inferiority test: the candidate passes when the lower end of the
interval is at least ``min_gain`` (a negative ``min_gain`` tolerates a small loss), or, without one,
when it is not worse beyond the interval (the upper end is at least 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardmodel.records import PreferenceExample


def pair_outcomes(examples: Sequence[PreferenceExample], scores: Sequence[Sequence[float]]) -> npt.NDArray[np.float64]:
    """1.0 where a model's scores order a preference pair as the humans did, 0.0 where not (a tie is wrong,
    as in :func:`rewardmodel.metrics.pairwise_report`), one per pair in the examples' order."""
    out = [float(s[p.better] > s[p.worse]) for ex, s in zip(examples, scores, strict=True) for p in ex.pairs]
    return np.asarray(out, dtype=np.float64)


def pair_sources(examples: Sequence[PreferenceExample]) -> list[str]:
    """Each pair's source (its example's), in the order of :func:`pair_outcomes`."""
    return [ex.source or "(none)" for ex in examples for _ in ex.pairs]


@dataclass(frozen=True)
class Comparison:
    """Two models' accuracy on the same pairs and the candidate's gain with its interval."""

    pairs: int
    baseline_accuracy: float
    candidate_accuracy: float
    gain: float
    interval: tuple[float, float]
    confidence: float
    min_gain: float | None
    passed: bool
    by_source: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def compare(baseline: npt.NDArray[np.float64], candidate: npt.NDArray[np.float64], sources: Sequence[str],
            min_gain: float | None = None, resamples: int = 2000, confidence: float = 0.95,
            seed: int = 0) -> Comparison:
    """The gate over per-pair outcomes of both models (``pair_outcomes`` of the same examples)."""
    if len(baseline) != len(candidate) or len(baseline) != len(sources):
        raise ValueError("baseline, candidate and sources must have one entry per pair")
    if not len(baseline):
        raise ValueError("no preference pairs to compare the models on")
    lo, hi = paired_bootstrap(baseline, candidate, resamples, confidence, seed)
    gain = float(candidate.mean() - baseline.mean())
    passed = lo >= min_gain if min_gain is not None else hi >= 0
    by_source: dict[str, dict[str, float]] = {}
    labels = np.asarray(sources)
    for source in sorted(set(sources)):
        sel = labels == source
        by_source[source] = {"pairs": int(sel.sum()), "baseline_accuracy": float(baseline[sel].mean()),
                             "candidate_accuracy": float(candidate[sel].mean()),
                             "gain": float(candidate[sel].mean() - baseline[sel].mean())}
    return Comparison(len(baseline), float(baseline.mean()), float(candidate.mean()), gain, (lo, hi), confidence,
                      min_gain, bool(passed), by_source)


def paired_bootstrap(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mean(b) − mean(a) over pairs resampled with replacement, the same for both."""
    rng = np.random.default_rng(seed)
    diff = b - a
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, 256):  # chunks: bounded memory on a large feedback export
        n = min(256, resamples - start)
        means[start:start + n] = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
