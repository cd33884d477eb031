"""The loop's record: one row per round of ``rewardserve retrain`` (``retrain_rounds``), and what the server and
``retrain --watch`` read back from it.

- :func:`record_round` writes a round (the retrain job does, after each one);
- :func:`latest_promotion` is the newest promotion of a model, what ``--watch`` compares against its parent;
- :func:`live_accuracy` is a version's accuracy against human judgements: the pairs of the stored events whose
  ``reward_model`` names it (the version id clients see in ``x-model-version``, alone or as ``name@version``);
- :class:`RoundsSnapshot` is what the server exports as metrics, read off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select

from feedback.judgements import preferred_pairs
from feedback.schema import RoundRow
from feedback.store import FeedbackStore, Filters, naive_utc


@dataclass(frozen=True)
class Round:
    """A stored round."""

    model: str
    round: int
    result: str
    finished_at: datetime
    version: str | None = None
    parent_version: str | None = None
    parent_path: str | None = None
    candidate_path: str | None = None
    parent_accuracy: float | None = None
    report: dict[str, Any] = field(default_factory=dict)


def record_round(store: FeedbackStore, r: Round) -> None:
    """Append ``r`` to the record."""
    store.ready()
    values = {k: v for k, v in r.__dict__.items()} | {"finished_at": naive_utc(r.finished_at)}
    with store.translating("recording a retraining round"), store.engine.begin() as conn:
        conn.execute(insert(RoundRow.__table__).values(values))  # type: ignore[arg-type]


def latest_promotion(store: FeedbackStore, model: str) -> Round | None:
    """The newest round of ``model`` that promoted a version (or rolled one back), or None."""
    store.ready()
    query = (select(*RoundRow.__table__.columns)
             .where(RoundRow.model == model, RoundRow.result.in_(("promoted", "rolled_back")))
             .order_by(RoundRow.id.desc()).limit(1))
    with store.translating("reading the retraining rounds"), store.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    m = row._mapping
    return Round(m["model"], m["round"], m["result"], m["finished_at"].replace(tzinfo=UTC), m["version"],
                 m["parent_version"], m["parent_path"], m["candidate_path"], m["parent_accuracy"], m["report"])


def live_outcomes(store: FeedbackStore, version: str, since: datetime | None = None,
                  until: datetime | None = None) -> np.ndarray:
    """1/0 per human pair that ``version``'s scores at the time ordered right/wrong (judged in [since, until))."""
    outcomes: list[float] = []
    for stored in store.events(Filters(since=since, until=until)):
        e = stored.event
        if e.scores is None or e.reward_model is None or not _names(e.reward_model, version):
            continue
        outcomes += [1.0 if e.scores[a] > e.scores[b] else 0.0 for a, b in preferred_pairs(e)]
    return np.asarray(outcomes)


def live_accuracy(store: FeedbackStore, version: str, since: datetime | None = None,
                  until: datetime | None = None) -> float | None:
    """The share of ``version``'s live pairs it ordered right, or None without any."""
    found = live_outcomes(store, version, since, until)
    return float(found.mean()) if len(found) else None


def _names(reward_model: str, version: str) -> bool:
    return reward_model == version or reward_model.endswith("@" + version)


@dataclass(frozen=True)
class RoundsSnapshot:
    """What the server exports about the loop: rounds by model and result, the newest round's time, and each
    model's newest promotion (its version, parent and the parent's live accuracy when replaced)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    last: dict[str, datetime] = field(default_factory=dict)
    promoted: dict[str, Round] = field(default_factory=dict)


def rounds_snapshot(store: FeedbackStore) -> RoundsSnapshot:
    """Read the record for the metrics (one grouped count and the newest promotion per model)."""
    store.ready()
    counts: dict[tuple[str, str], int] = {}
    last: dict[str, datetime] = {}
    query = select(RoundRow.model, RoundRow.result, func.count(), func.max(RoundRow.finished_at)).group_by(
        RoundRow.model, RoundRow.result)
    with store.translating("reading the retraining rounds"), store.engine.connect() as conn:
        for model, result, n, newest in conn.execute(query):
            counts[(model, result)] = int(n)
            newest = newest.replace(tzinfo=UTC)  # stored naive UTC
            last[model] = max(last.get(model, newest), newest)
    promoted = {m: p for m in last if (p := latest_promotion(store, m)) is not None}
    return RoundsSnapshot(counts, last, promoted)
