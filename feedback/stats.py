"""What the store holds and what it says about the reward models: ``rewardserve feedback stats`` and
``GET /feedback/stats``.

- counts by form, source, annotator and day;
- inter-annotator agreement: over every prompt and set of completions that two or more annotators judged,
  the share of (annotator pair, completion pair) comparisons where both preferred the same completion
  (strict preferences only; an annotator's latest judgement of an item counts);
- live accuracy of each reward model: the share of the humans' pairwise preferences that the model's
  scores at the time (the event's ``scores``) ordered the same way — the online twin of training's
  held-out accuracy.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from feedback.events import FeedbackEvent, item_key
from feedback.judgements import preferred_pairs, scored_correctly
from feedback.store import EVERYTHING, FeedbackStore, Filters, StoredEvent

TOP_ANNOTATORS = 50
"""Annotators listed by count (the busiest first); the total covers all of them."""

Verdicts = dict[frozenset[str], str]
"""One annotator's strict preferences on one item: {completion a, completion b} -> the preferred text."""


@dataclass
class Accuracy:
    """Pairs a reward model's scores ordered like the humans did, out of all it was judged on."""

    pairs: int = 0
    correct: int = 0

    def add(self, event: FeedbackEvent) -> None:
        """Count ``event``'s preferences against its scores."""
        assert event.scores is not None
        pairs = preferred_pairs(event)
        self.pairs += len(pairs)
        self.correct += scored_correctly(event.scores, pairs)

    @property
    def ratio(self) -> float | None:
        """The share correct, None before any pair."""
        return self.correct / self.pairs if self.pairs else None


@dataclass
class Judged:
    """The judgement side of the stats, gathered in one pass over the events."""

    accuracy: dict[str, Accuracy] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Verdicts]] = field(default_factory=dict)

    def add(self, event: FeedbackEvent) -> None:
        """Take one event (oldest first: a later judgement by the same annotator replaces an earlier one)."""
        if event.scores is not None and event.reward_model is not None:
            self.accuracy.setdefault(event.reward_model, Accuracy()).add(event)
        if event.annotator is not None:
            mine: Verdicts = {}
            for a, b in preferred_pairs(event):
                mine[frozenset((event.completions[a], event.completions[b]))] = event.completions[a]
            by_annotator = self.verdicts.setdefault(item_key(event.prompt, event.completions), {})
            by_annotator[event.annotator] = mine

    def agreement(self, annotator: str | None = None) -> dict[str, Any]:
        """Items judged by two or more annotators, the comparisons between them, and the share that agreed;
        with ``annotator``, only the comparisons of that annotator with the others (what the labeling page
        shows each annotator)."""
        items = comparisons = agreed = 0
        for by_annotator in self.verdicts.values():
            if len(by_annotator) < 2 or (annotator is not None and annotator not in by_annotator):
                continue
            items += 1
            for (a, mine), (b, theirs) in itertools.combinations(by_annotator.items(), 2):
                if annotator is not None and annotator not in (a, b):
                    continue
                for pair in mine.keys() & theirs.keys():
                    comparisons += 1
                    agreed += mine[pair] == theirs[pair]
        return {"items": items, "comparisons": comparisons,
                "ratio": agreed / comparisons if comparisons else None}


def judged(events: Iterable[StoredEvent]) -> Judged:
    """Agreement and live accuracy over ``events``."""
    out = Judged()
    for stored in events:
        out.add(stored.event)
    return out


def annotator_agreement(store: FeedbackStore, annotator: str) -> dict[str, Any]:
    """How often ``annotator`` agreed with the others who judged the same items (see :meth:`Judged.agreement`)."""
    return judged(store.events(Filters(items_of=annotator))).agreement(annotator)


def feedback_stats(store: FeedbackStore, filters: Filters = EVERYTHING) -> dict[str, Any]:
    """The full report (JSON-ready)."""
    by_form = store.counts("form", filters)
    result = judged(store.events(filters))
    return {
        "events": sum(by_form.values()),
        "by_form": by_form,
        "by_source": store.counts("source", filters),
        "by_annotator": store.counts("annotator", filters, limit=TOP_ANNOTATORS),
        "by_day": dict(sorted(store.counts("day", filters).items())),
        "agreement": result.agreement(),
        "live_accuracy": {model: {"pairs": a.pairs, "accuracy": a.ratio}
                          for model, a in sorted(result.accuracy.items())},
    }
