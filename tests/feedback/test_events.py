"""The event rules: each form accepted, each malformed event refused with its field named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from feedback.events import FeedbackBatch, FeedbackEvent, item_key
from feedback.judgements import IMPLICIT
from tests.feedback import events


@pytest.mark.parametrize(("event", "form"), [(events.choice(1), "choice"), (events.ranking(1), "ranking"),
                                             (events.ratings(1), "ratings"), (events.thumbs(1), "thumbs"),
                                             *((events.implicit(f, 1), f) for f in IMPLICIT)])
def test_each_form_is_accepted_and_named(event: dict[str, Any], form: str) -> None:
    parsed = FeedbackEvent.model_validate(event)
    assert parsed.form == form
    # stored and loaded back as sent (copy and continue are the wire's names, not the model's attributes)
    assert parsed.content() == event and FeedbackEvent.model_validate(parsed.content()) == parsed


@pytest.mark.parametrize(("form", "pairs"), [("regenerate", [(1, 0)]), ("copy", [(1, 0)]), ("edit", [(1, 0)]),
                                             ("continue", [(1, 0)]), ("abandon", [(0, 1)])])
def test_an_implicit_signal_states_weak_pairs(form: str, pairs: list[tuple[int, int]]) -> None:
    """A regenerated or abandoned reply loses to the other; a copied, continued or edited-into one wins."""
    event = FeedbackEvent.model_validate(events.implicit(form, 1))
    assert event.judgement.pairs() == pairs
    records, why_none = event.judgement.records(event)
    assert why_none is None and [r["weight"] for r in records] == [IMPLICIT[form].weight]
    alone = FeedbackEvent.model_validate({"id": "x", "prompt": "q", "completions": ["only"], form: 0}) \
        if form != "edit" else None
    if alone is not None:  # a signal on the only reply shown is kept, and states nothing to train on
        assert alone.judgement.records(alone) == ([], "an implicit signal on one reply states no preference")


BASE = {"id": "e", "prompt": "q", "completions": ["a", "b"]}


@pytest.mark.parametrize(("extra", "message"), [
    ({}, "exactly one judgement"),
    ({"choice": 0, "ranking": [0, 1]}, "exactly one judgement"),
    ({"choice": 2}, "'choice' must be an index 0..1"),
    ({"choice": True}, "valid integer"),  # JSON's true is not the index 1
    ({"ranking": [0, 0]}, "'ranking' must list each"),
    ({"ranking": [[], 0, 1]}, "'ranking' must list each"),
    ({"ratings": [1]}, "'ratings' must hold 2"),
    ({"ratings": [1, 3]}, "thumbs are \\+1 or -1"),
    ({"ratings": [None, None]}, "at least one completion must be rated"),
    ({"ratings": [1, 6], "scale": [1, 5]}, "in the scale"),
    ({"ratings": [1, 2], "scale": [5, 1]}, "lo < hi"),
    ({"choice": 0, "scale": [1, 5]}, "'scale' belongs to ratings"),
    ({"ratings": [1, -1], "criteria": {"helpful": [1]}}, "'criteria.helpful' must hold 2"),
    ({"choice": 0, "scores": [1.0, 2.0]}, "come together"),
    ({"choice": 0, "scores": [1.0], "reward_model": "m"}, "'scores' must hold 2"),
    ({"choice": 0, "metadata": {"user": 7}}, "metadata.user must be a string"),
    ({"choice": 0, "metadata": {"blob": "x" * 17000}}, "at most 16384 bytes"),
    ({"choice": 0, "created_at": "2026-11-01T00:00:00"}, "timezone"),
    ({"choice": 0, "source": "chat ui!"}, "pattern"),
    ({"choice": 0, "surprise": 1}, "Extra inputs"),
    ({"copy": 2}, "'copy' must be an index 0..1"),
    ({"continue": True}, "valid integer"),
    ({"regenerate": 0, "abandon": 1}, "exactly one judgement"),
    ({"edit": {"original": 0, "edited": 0}}, "another completion than the original"),
    ({"edit": {"original": 0, "edited": 5}}, "'edit.edited' must be an index"),
    ({"edit": {"original": 0}}, "edited"),
])
def test_malformed_events_are_refused_naming_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeedbackEvent.model_validate({**BASE, **extra})


def test_completions_must_be_distinct_and_a_choice_needs_two() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        FeedbackEvent.model_validate({**BASE, "completions": ["a", "a"], "choice": 0})
    with pytest.raises(ValidationError, match="at least two"):
        FeedbackEvent.model_validate({**BASE, "completions": ["a"], "choice": 0})
    with pytest.raises(ValidationError, match=r"prompt\[0\]\.content"):
        FeedbackEvent.model_validate({**BASE, "prompt": [{"role": "user"}], "choice": 0})


def test_a_batch_error_names_the_event_index() -> None:
    with pytest.raises(ValidationError) as info:
        FeedbackBatch.model_validate({"events": [events.choice(0), {**events.choice(1), "choice": 9}]})
    assert info.value.errors()[0]["loc"] == ("events", 1)
    assert "'choice'" in info.value.errors()[0]["msg"]


def test_content_hash_is_the_same_for_a_retry_and_differs_for_other_content() -> None:
    sent = {**events.ratings(1), "created_at": "2026-11-01T10:00:00Z"}
    # the same instant in another zone, and the same ratings written as floats
    again = {**sent, "created_at": "2026-11-01T11:00:00+01:00", "ratings": [5.0, 1.0, None]}
    changed = {**sent, "ratings": [4, 1, None]}
    h = FeedbackEvent.model_validate(sent).content_hash()
    assert FeedbackEvent.model_validate(again).content_hash() == h
    assert FeedbackEvent.model_validate(changed).content_hash() != h


def test_item_key_ignores_the_order_of_completions() -> None:
    assert item_key("q", ["a", "b"]) == item_key("q", ["b", "a"]) != item_key("q", ["a", "c"])
    assert item_key("q", ["a", "b"]) != item_key([{"role": "user", "content": "q"}], ["a", "b"])


def test_explicit_nulls_are_the_same_as_absent_fields() -> None:
    sent = {**BASE, "choice": 0, "scores": None, "reward_model": None, "metadata": None, "created_at": None,
            "ranking": None, "criteria": None}
    assert FeedbackEvent.model_validate(sent).content_hash() == FeedbackEvent.model_validate(
        {**BASE, "choice": 0}).content_hash()
