"""Evaluation metrics of a reward model, shared by every stage that evaluates one.

Training's held-out report, ``rewardserve eval`` on a checkpoint and on an ONNX bundle all call
:func:`pairwise_report`, so they print the same numbers for the same scores: pairwise accuracy where the
data hold pairs, and where they hold thumbs or ratings, how the reward correlates with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardmodel.records import PreferenceExample

LENGTH_BUCKETS: tuple[int, ...] = (0, 32, 64, 128, 256, 512)
"""Left edges (in completion tokens, mean of the pair) of the accuracy-by-length buckets."""


@dataclass(frozen=True)
class PointwiseReport:
    """How the reward agrees with absolute human judgements (None where the data cannot say)."""

    points: int
    ratings: int
    thumbs: int
    spearman: float | None
    """Rank correlation of the reward with the human target (a thumb 1/0, a rating on [0, 1] of its scale)."""
    pearson: float | None
    auc: float | None
    """ROC AUC of the reward on thumbs: the chance that a random up-voted reply outscores a down-voted one."""


@dataclass(frozen=True)
class PairwiseReport:
    """What a user needs to judge a reward model on held-out preferences. The pair figures are None when
    the data hold no pairs (thumbs only); ``pointwise`` is None when they hold no thumbs or ratings."""

    pairs: int
    accuracy: float | None
    mean_margin: float | None
    accuracy_by_length: dict[str, dict[str, float]]
    length_pearson: float
    length_spearman: float
    model_prefers_longer: float | None
    data_prefers_longer: float | None
    reward_mean: float
    reward_std: float
    pointwise: PointwiseReport | None = None
    criteria: dict[str, dict[str, Any]] | None = None
    """A criteria model's figures per criterion (:func:`criteria_report`)."""
    annotators: dict[str, float | int] | None = None
    """Where several annotators judged the same replies: their agreement, the ceiling (:func:`agreement`)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _bucket_name(i: int) -> str:
    lo = LENGTH_BUCKETS[i]
    return f"{lo}-{LENGTH_BUCKETS[i + 1] - 1}" if i + 1 < len(LENGTH_BUCKETS) else f"{lo}+"


def rankdata(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Ranks starting at 1, ties given their average rank (as ``scipy.stats.rankdata``), vectorized: the
    monitors rank 10k-item windows at every scrape."""
    values = np.asarray(values)
    n = len(values)
    order = np.argsort(values, kind="mergesort")
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, dtype=bool)
    group = np.cumsum(starts)[position]  # 1-based tie group of each value
    edges = np.r_[np.nonzero(starts)[0], n]  # where each group starts, and the end
    return 0.5 * (edges[group - 1] + edges[group] + 1).astype(np.float64)


def pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    """Pearson correlation; 0.0 where either side is constant."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def roc_auc(scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]) -> float | None:
    """ROC AUC (Mann–Whitney, ties counted half); None without both classes."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    return float((rankdata(scores)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pointwise_report(
    examples: Sequence[PreferenceExample], scores: Sequence[Sequence[float]]
) -> PointwiseReport | None:
    """Correlation of ``scores[i][j]`` with the examples' thumbs and ratings; None when they have none."""
    got, target, thumb = [], [], []
    for ex, s in zip(examples, scores, strict=True):
        for p in ex.points:
            got.append(s[p.index])
            target.append(p.target)
            thumb.append(p.kind == "thumbs")
    if not got:
        return None
    r, t, is_thumb = np.asarray(got, np.float64), np.asarray(target, np.float64), np.asarray(thumb, np.bool_)
    varied = len(r) > 1 and np.std(r) > 0 and np.std(t) > 0
    return PointwiseReport(
        points=len(r), ratings=int((~is_thumb).sum()), thumbs=int(is_thumb.sum()),
        spearman=pearson(rankdata(r), rankdata(t)) if varied else None,
        pearson=pearson(r, t) if varied else None,
        auc=roc_auc(r[is_thumb], t[is_thumb] > 0.5),
    )


def pairwise_report(
    examples: Sequence[PreferenceExample],
    scores: Sequence[Sequence[float]],
    lengths: Sequence[Sequence[int]],
) -> PairwiseReport:
    """Evaluate ``scores[i][j]`` (score of completion j of example i) against the examples' preferences.

    A tie counts as a wrong decision. ``lengths`` are completion lengths in tokens.
    """
    if not (len(examples) == len(scores) == len(lengths)):
        raise ValueError("examples, scores and lengths must have one entry per example")
    better, worse, len_b, len_w = [], [], [], []
    for ex, s, n in zip(examples, scores, lengths, strict=True):
        if len(s) != len(ex.completions) or len(n) != len(ex.completions):
            raise ValueError(f"{ex.where}: one score and one length per completion expected")
        for p in ex.pairs:
            better.append(s[p.better])
            worse.append(s[p.worse])
            len_b.append(n[p.better])
            len_w.append(n[p.worse])
    points = pointwise_report(examples, scores)
    if not better and points is None and not any(ex.criteria or ex.criterion_pairs for ex in examples):
        raise ValueError("no preference pairs, thumbs, ratings or criteria to evaluate")
    sb, sw = np.asarray(better, np.float64), np.asarray(worse, np.float64)
    lb, lw = np.asarray(len_b, np.float64), np.asarray(len_w, np.float64)
    correct = sb > sw
    some = bool(len(sb))
    pair_len = (lb + lw) / 2
    by_length: dict[str, dict[str, float]] = {}
    bucket = np.searchsorted(np.asarray(LENGTH_BUCKETS), pair_len, side="right") - 1
    for i in range(len(LENGTH_BUCKETS)):
        sel = bucket == i
        if sel.any():
            by_length[_bucket_name(i)] = {"pairs": int(sel.sum()), "accuracy": float(correct[sel].mean())}
    all_scores = np.asarray([v for s in scores for v in s], np.float64)
    all_lengths = np.asarray([v for n in lengths for v in n], np.float64)
    differ = lb != lw
    longer_better = lb > lw
    return PairwiseReport(
        pairs=len(sb),
        accuracy=float(correct.mean()) if some else None,
        mean_margin=float((sb - sw).mean()) if some else None,
        accuracy_by_length=by_length,
        length_pearson=pearson(all_scores, all_lengths),
        length_spearman=pearson(rankdata(all_scores), rankdata(all_lengths)),
        model_prefers_longer=float((correct == longer_better)[differ].mean()) if differ.any() else (
            0.5 if some else None),
        data_prefers_longer=float(longer_better[differ].mean()) if differ.any() else (0.5 if some else None),
        reward_mean=float(all_scores.mean()),
        reward_std=float(all_scores.std()),
        pointwise=points,
        annotators=agreement(examples, scores),
    )


def criteria_report(
    examples: Sequence[PreferenceExample], outputs: Sequence[Sequence[Sequence[float]]], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per criterion: accuracy on its pairs and the correlation of its output with its ratings (None where
    the data hold none). ``outputs[i][j][c]``: output c for completion j of example i."""
    report: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        margins = [o[p.better][c] - o[p.worse][c] for ex, o in zip(examples, outputs, strict=True)
                   for p in ex.criterion_pairs if p.name == name]
        rated = [(o[x.index][c], x.target) for ex, o in zip(examples, outputs, strict=True)
                 for x in ex.criteria if x.name == name]
        got, target = np.asarray([r for r, _ in rated], np.float64), np.asarray([t for _, t in rated], np.float64)
        varied = len(rated) > 1 and np.std(got) > 0 and np.std(target) > 0
        report[name] = {
            "pairs": len(margins), "accuracy": float((np.asarray(margins) > 0).mean()) if margins else None,
            "ratings": len(rated), "spearman": pearson(rankdata(got), rankdata(target)) if varied else None,
            "pearson": pearson(got, target) if varied else None,
        }
    return report


def agreement(
    examples: Sequence[PreferenceExample], scores: Sequence[Sequence[float]]
) -> dict[str, float | int] | None:
    """Where two or more judgements order the same two replies of one prompt (several records, or a record's
    ``votes``): how often a judgement agrees with the majority of its item (the annotators' agreement, the
    ceiling of any model's figure on these judgements) and how often it agrees with the model. None when no
    item was judged twice."""
    tally: dict[tuple[str, str, str], list[float]] = {}  # (prompt, a, b), a < b → [for a > b, for b > a, model]
    for ex, s in zip(examples, scores, strict=True):
        prompt = ex.prompt if isinstance(ex.prompt, str) else repr(ex.prompt)
        for p in ex.pairs:
            won, lost = ex.completions[p.better], ex.completions[p.worse]
            key, forward = ((prompt, won, lost), True) if won < lost else ((prompt, lost, won), False)
            n_for, n_against = p.votes or (1, 0)
            entry = tally.setdefault(key, [0.0, 0.0, 0.0])
            entry[0 if forward else 1] += n_for
            entry[1 if forward else 0] += n_against
            margin = s[p.better] - s[p.worse]
            entry[2] = margin if forward else -margin  # the model's order of (a, b): > 0 means a first
    judged = [e for e in tally.values() if e[0] + e[1] >= 2]
    if not judged:
        return None
    total = sum(e[0] + e[1] for e in judged)
    return {"items": len(judged), "judgements": int(total),
            "agreement": sum(max(e[0], e[1]) for e in judged) / total,
            "model": sum(e[0] if e[2] > 0 else e[1] if e[2] < 0 else 0.0 for e in judged) / total}
