"""What each judgement says about pairs: the reading export, agreement and live accuracy share."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.events import FeedbackEvent
from feedback.judgements import (
    IMPLICIT,
    JUDGEMENTS,
    Abandon,
    Choice,
    Continue,
    Copy,
    Edit,
    Judgement,
    Ranking,
    Ratings,
    Regenerate,
    preferred_pairs,
    scored_correctly,
)

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


@pytest.mark.parametrize(("judgement", "cls", "form"), [
    ({"choice": 1}, Choice, "choice"),
    ({"ranking": [[0, 2], 1]}, Ranking, "ranking"),
    ({"ratings": [3, None, 5], "scale": [1, 5]}, Ratings, "ratings"),
    ({"ratings": [1, -1, None]}, Ratings, "thumbs"),
    ({"regenerate": 0}, Regenerate, "regenerate"),
    ({"copy": 2}, Copy, "copy"),
    ({"edit": {"original": 0, "edited": 2}}, Edit, "edit"),
    ({"continue": 1}, Continue, "continue"),
    ({"abandon": 1}, Abandon, "abandon"),
])
def test_each_form_is_one_class_built_from_the_flat_event_as_stored(
        judgement: dict[str, Any], cls: type[Judgement], form: str) -> None:
    event = FeedbackEvent.model_validate({**BASE, **judgement, "metadata": {"user": "u-1"}})
    assert isinstance(event.judgement, cls) and event.form == form
    # the stored body (the client's JSON) loads to the same judgement
    again = FeedbackEvent.model_validate(event.content())
    assert again.judgement == event.judgement and again.judgement.pairs() == event.judgement.pairs()
    # every form's records carry the event's user, so personal rewards can be fitted from any export
    records, why_none = event.judgement.records(event)
    assert records and why_none is None and all(r["user"] == "u-1" for r in records)
    assert {j.field for j in JUDGEMENTS} == {"choice", "ranking", "ratings", *IMPLICIT}


def test_a_form_checks_its_own_rules() -> None:
    with pytest.raises(ValueError, match=r"index 0\.\.2"):
        Choice(3, 3).check(3)
    with pytest.raises(ValueError, match="at least two completions"):
        Ranking([0], 1).check(1)
    with pytest.raises(ValueError, match="at least one completion must be rated"):
        Ratings([None, None]).check(2)
    assert Ranking([[0, 1]], 2).records(FeedbackEvent.model_validate(
        {**BASE, "completions": ["a", "b"], "ranking": [[0, 1]]})) == ([], "no preference (every completion tied)")
