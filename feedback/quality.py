"""Data quality before training: what ``rewardserve retrain`` leaves out of a round, and why, counted.

- **Exact duplicates**: the same judgement of the same prompt and completions by the same named person (annotator
  or user) under another id; the first is kept (anonymous judgements alike may be different people: kept).
- **Self-contradictions**: one person stating both orders of one pair of completions of one prompt (in one
  event or across their events); every event of theirs on that item is left out.
- **Annotators who disagree with the others**: an annotator whose preferences match the other annotators' on
  the items they share less often than ``min_agreement`` (over at least ``min_comparisons`` comparisons) is
  left out entirely, and named in the report. Agreement is :meth:`feedback.stats.Judged.agreement`'s: the
  measure the labeling page shows each annotator.

Nothing is left out silently: :class:`QualityReport` counts each reason, and names the annotators.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from feedback.events import item_key
from feedback.stats import judged
from feedback.store import StoredEvent


@dataclass
class QualityReport:
    """What the filter left out, and why."""

    kept: int = 0
    duplicates: int = 0
    contradictions: int = 0
    annotators: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each annotator left out: their agreement ratio, comparisons and events."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kept": self.kept, "duplicates": self.duplicates, "contradictions": self.contradictions,
                "annotators_left_out": self.annotators}


def clean(events: Sequence[StoredEvent], min_agreement: float = 0.5, min_comparisons: int = 10
          ) -> tuple[list[StoredEvent], QualityReport]:
    """``events`` without duplicates, self-contradictions and the annotators below ``min_agreement`` (0: keep
    every annotator); the report says what went."""
    report = QualityReport()
    min_comparisons = max(1, min_comparisons)  # an agreement over no comparison is no agreement
    out = _distinct(events, report)
    out = _consistent(out, report)
    if min_agreement > 0:
        out = _agreeing(out, min_agreement, min_comparisons, report)
    report.kept = len(out)
    return out, report


def _who(stored: StoredEvent) -> str | None:
    e = stored.event
    return f"annotator:{e.annotator}" if e.annotator else f"user:{e.user}" if e.user else None


def _distinct(events: Sequence[StoredEvent], report: QualityReport) -> list[StoredEvent]:
    seen: set[str] = set()
    out = []
    for stored in events:
        if _who(stored) is None:  # two anonymous judgements alike may be two people: both kept
            out.append(stored)
            continue
        body = {k: v for k, v in stored.event.content().items() if k not in ("id", "created_at")}
        key = json.dumps(body, sort_keys=True, ensure_ascii=False)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        out.append(stored)
    return out


def _consistent(events: Sequence[StoredEvent], report: QualityReport) -> list[StoredEvent]:
    """Drop every event of a person on an item where they stated both orders of a pair."""
    said: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for stored in events:
        e, who = stored.event, _who(stored)
        key = (who or f"event:{e.id}", item_key(e.prompt, e.completions))
        said[key] |= {(e.completions[a], e.completions[b]) for a, b in e.judgement.pairs()}
    torn = {key for key, pairs in said.items() if any((b, a) in pairs for a, b in pairs)}
    out = []
    for stored in events:
        e, who = stored.event, _who(stored)
        if (who or f"event:{e.id}", item_key(e.prompt, e.completions)) in torn:
            report.contradictions += 1
            continue
        out.append(stored)
    return out


def _agreeing(events: Sequence[StoredEvent], min_agreement: float, min_comparisons: int,
              report: QualityReport) -> list[StoredEvent]:
    """Leave out the least agreeing annotator below the bar, then measure the others again without them (an
    honest annotator who shared items with a bad one looks worse than they are), until none is below it."""
    kept = list(events)
    while True:
        stats = judged(kept)
        counts = Counter(s.event.annotator for s in kept if s.event.annotator)
        below = []
        for annotator in counts:
            found = stats.agreement(annotator)
            if found["comparisons"] >= min_comparisons and found["ratio"] < min_agreement:
                below.append((found["ratio"], annotator, found["comparisons"]))
        below.sort()
        if not below or (len(below) > 1 and below[0][0] == below[1][0]):
            return kept  # none below the bar, or a tie at the bottom (two who only disagree): no one to blame
        ratio, worst, comparisons = below[0]
        report.annotators[worst] = {"agreement": round(ratio, 4), "comparisons": comparisons,
                                    "events": counts[worst]}
        kept = [s for s in kept if s.event.annotator != worst]
