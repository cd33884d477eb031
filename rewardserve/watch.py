"""``rewardserve retrain --watch``: after a promotion, is the new version as good as its parent on live judgements?

Chat backends send each judgement with the ``scores`` the served model gave and its version as ``reward_model``
(the ``x-model-version`` of the answer, alone or as ``name@version``). So the store holds, for the promoted
version, human pairs scored after the promotion, and for its parent, the pairs scored before it. The two live
accuracies are compared with a bootstrap interval of their difference (each side resampled on its own: they are
different judgements). Worse beyond the interval, ``--rollback`` swaps the parent back in and records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewardserve.promotion import point_current, promote
from rewardserve.retrain import RetrainSettings

MIN_PAIRS = 50
"""Live pairs each side needs before a verdict: fewer decide nothing."""


@dataclass
class WatchReport:
    """The verdict on the newest promotion."""

    verdict: str
    """``no_promotion``, ``too_few_judgements``, ``as_good``, ``worse`` or ``rolled_back``."""
    reason: str
    model: str = ""
    version: str | None = None
    parent_version: str | None = None
    live: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def watch(s: RetrainSettings, rollback: bool = False, min_pairs: int = MIN_PAIRS) -> WatchReport:
    """Compare the newest promotion of ``s.name`` with its parent on live judgements; roll back when asked and
    the new version is worse beyond the interval."""
    from feedback.events import utc_now
    from feedback.rounds import Round, latest_promotion, live_outcomes, record_round
    from feedback.store import FeedbackStore

    store = FeedbackStore(s.db, pool_size=1, must_exist=True)
    try:
        model = s.name or ""
        latest = latest_promotion(store, model)
        if latest is None or latest.version is None or latest.parent_version is None:
            return WatchReport("no_promotion", f"no promotion of {model!r} is recorded", model)
        if latest.result == "rolled_back":  # what serves is the parent put back: nothing to hold it to
            return WatchReport("no_promotion", f"the newest record of {model!r} is a rollback to "
                               f"{latest.version}; nothing to watch until the next promotion", model)
        new = live_outcomes(store, latest.version, since=latest.finished_at)
        old = live_outcomes(store, latest.parent_version, until=latest.finished_at)
        report = WatchReport("as_good", "", model, latest.version, latest.parent_version,
                             {"version": _side(new), "parent": _side(old)})
        if min(len(new), len(old)) < min_pairs:
            report.verdict = "too_few_judgements"
            report.reason = (f"{len(new)} live pairs scored by {latest.version} and {len(old)} by its parent; each "
                             f"needs {min_pairs}: send judgements with the scores and reward_model")
            return report
        lo, hi = unpaired_interval(old, new, s.resamples, s.confidence, s.seed)
        assert report.live is not None
        report.live |= {"gain": float(new.mean() - old.mean()), "interval": [lo, hi]}
        if hi >= 0:
            report.reason = "the new version is not worse beyond the interval"
            return report
        report.verdict = "worse"
        report.reason = (f"live accuracy {new.mean():.4f} against the parent's {old.mean():.4f}, interval "
                         f"[{lo:+.4f}, {hi:+.4f}]")
        if rollback and latest.parent_path:
            answer = promote(None, Path(latest.parent_path), s, link=False)
            report.verdict, report.rollback = "rolled_back", answer
            # recorded before the link moves: a failure there must not make the next watch roll back again
            record_round(store, Round(model, latest.round, "rolled_back", utc_now(), answer.get("version"),
                                      latest.version, latest.candidate_path, latest.parent_path, None,
                                      report.to_dict()))
            point_current(s.out, Path(latest.parent_path))
        return report
    finally:
        store.close()


def _side(outcomes: np.ndarray) -> dict[str, Any]:
    return {"pairs": len(outcomes), "accuracy": float(outcomes.mean()) if len(outcomes) else None}


def unpaired_interval(a: np.ndarray, b: np.ndarray, resamples: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """The bootstrap interval of ``mean(b) - mean(a)``, each side resampled on its own."""
    rng = np.random.default_rng(seed)
    diffs = rng.choice(b, (resamples, len(b))).mean(axis=1) - rng.choice(a, (resamples, len(a))).mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(diffs, tail)), float(np.quantile(diffs, 1 - tail))
