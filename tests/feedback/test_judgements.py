"""What each judgement says about pairs: the reading export, agreement and live accuracy share."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.events import FeedbackEvent
from feedback.judgements import preferred_pairs, scored_correctly

BASE = {"id": "e", "prompt": "q", "completions": ["a", "b", "c"]}


@pytest.mark.parametrize(("judgement", "pairs"), [
    ({"choice": 1}, [(1, 0), (1, 2)]),
    ({"ranking": [2, 0, 1]}, [(2, 0), (2, 1), (0, 1)]),
    ({"ranking": [[0, 2], 1]}, [(0, 1), (2, 1)]),
    ({"ranking": [[0, 1, 2]]}, []),
    ({"ratings": [3, None, 5], "scale": [1, 5]}, [(2, 0)]),
    ({"ratings": [4, 4, 1], "scale": [1, 5]}, [(0, 2), (1, 2)]),
    ({"ratings": [1, -1, None]}, [(0, 1)]),
])
def test_preferred_pairs(judgement: dict[str, Any], pairs: list[tuple[int, int]]) -> None:
    assert preferred_pairs(FeedbackEvent.model_validate({**BASE, **judgement})) == pairs


def test_scores_order_pairs_strictly_as_training_accuracy_does() -> None:
    assert scored_correctly([3.0, 1.0, 1.0], [(0, 1), (1, 2), (2, 0)]) == 1  # a tie is not a correct order
