"""What a judgement says about pairs of completions: the one reading that export, agreement and live
accuracy share, so the three can never disagree on what an event meant.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from feedback.events import FeedbackEvent, Rating
from rewardmodel.records import ranking_groups, ranking_pairs

Pair = tuple[int, int]
"""(better, worse): indices into the event's completions."""


def preferred_pairs(event: FeedbackEvent) -> list[Pair]:
    """Every strict preference the event states: a choice beats each other completion, a ranking's groups
    beat the groups below them, and a higher rating beats a lower one (ties and unrated completions say
    nothing)."""
    if event.choice is not None:
        return [(event.choice, j) for j in range(len(event.completions)) if j != event.choice]
    if event.ranking is not None:
        return ranking_pairs(ranking_groups(event.ranking, len(event.completions)))
    assert event.ratings is not None  # the event's validator guarantees exactly one judgement
    return rating_pairs(event.ratings)


def rating_pairs(ratings: Sequence[Rating]) -> list[Pair]:
    """(better, worse) for every two rated completions whose ratings differ."""
    pairs = []
    for i, j in itertools.combinations(range(len(ratings)), 2):
        a, b = ratings[i], ratings[j]
        if a is None or b is None or a == b:
            continue
        pairs.append((i, j) if a > b else (j, i))
    return pairs


def scored_correctly(scores: Sequence[float], pairs: Sequence[Pair]) -> int:
    """How many ``pairs`` the scores order the same way (strictly: a tie is wrong, as in training's accuracy)."""
    return sum(1 for a, b in pairs if scores[a] > scores[b])
