"""What retraining leaves out before it trains (feedback/quality.py), and the record of rounds (feedback/rounds.py),
on the real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from feedback.events import FeedbackEvent
from feedback.quality import clean
from feedback.rounds import Round, latest_promotion, live_accuracy, record_round, rounds_snapshot
from feedback.store import FeedbackStore, StoredEvent

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _stored(i: int, prompt: str, best: int, who: dict[str, Any], **extra: Any) -> StoredEvent:
    event = FeedbackEvent.model_validate({"id": f"e{i}", "prompt": prompt, "completions": ["x", "y"], "choice": best,
                                          **who, **extra})
    return StoredEvent(event, T0 + timedelta(minutes=i))


def test_duplicates_and_self_contradictions_are_left_out_and_counted() -> None:
    events = [_stored(0, "p", 0, {"annotator": "ann"}), _stored(1, "p", 0, {"annotator": "ann"}),  # a duplicate
              _stored(2, "q", 0, {"metadata": {"user": "u"}}), _stored(3, "q", 1, {"metadata": {"user": "u"}}),
              _stored(4, "q", 0, {"metadata": {"user": "v"}})]  # another person: not a contradiction
    kept, report = clean(events, min_agreement=0)
    assert [s.event.id for s in kept] == ["e0", "e4"]
    assert (report.duplicates, report.contradictions, report.kept) == (1, 2, 2)
    # two anonymous judgements alike may be two people: both kept
    anonymous = [_stored(5, "r", 0, {}), _stored(6, "r", 0, {})]
    assert len(clean(anonymous, min_agreement=0)[0]) == 2


def test_the_least_agreeing_annotator_goes_first_and_honest_ones_are_measured_without_them() -> None:
    events, i = [], 0
    for item in range(12):  # three annotators on every item: two honest (choose 0), one flipped
        for who, best in (("alice", 0), ("bob", 0), ("mallory", 1)):
            events.append(_stored(i, f"item {item}", best, {"annotator": who}))
            i += 1
    kept, report = clean(events, min_agreement=0.5, min_comparisons=10)
    assert list(report.annotators) == ["mallory"] and report.annotators["mallory"]["agreement"] == 0.0
    assert report.annotators["mallory"]["events"] == 12
    assert {s.event.annotator for s in kept} == {"alice", "bob"}  # alice and bob agreed 50 % with mallory in
    _, few = clean(events, min_agreement=0.5, min_comparisons=100)  # too few comparisons: nobody is judged
    assert few.annotators == {}
    # two annotators who only disagree: no one to blame, both kept
    pair = [_stored(100 + i, f"item {i}", i % 2 if who == "carol" else 1 - i % 2, {"annotator": who})
            for i in range(12) for who in ("carol", "dave")]
    kept, tied = clean(pair, min_agreement=0.5)
    assert tied.annotators == {} and len(kept) == 24


def test_the_record_of_rounds_and_live_accuracy(store_url: str) -> None:
    store = FeedbackStore(store_url)
    try:
        scored = [{"id": f"s{i}", "prompt": "p", "completions": ["a", "b"], "choice": 0,
                   "scores": [1.0, 0.0] if i < 3 else [0.0, 1.0], "reward_model": "rm@v1",
                   "created_at": (T0 + timedelta(minutes=i)).isoformat()} for i in range(4)]
        store.add([FeedbackEvent.model_validate(e) for e in scored], T0)
        assert live_accuracy(store, "v1") == 0.75 and live_accuracy(store, "v2") is None
        assert live_accuracy(store, "v1", until=T0 + timedelta(minutes=2)) == 1.0
        for n, result in enumerate(("skipped", "promoted", "refused"), 1):
            record_round(store, Round("rm", n, result, T0 + timedelta(days=n), "v2" if result == "promoted" else None,
                                      "v1", "/old", "/new", 0.75, {"n": n}))
        latest = latest_promotion(store, "rm")
        assert latest is not None and (latest.version, latest.parent_accuracy, latest.report) == ("v2", 0.75, {"n": 2})
        snapshot = rounds_snapshot(store)
        assert snapshot.counts == {("rm", "skipped"): 1, ("rm", "promoted"): 1, ("rm", "refused"): 1}
        assert snapshot.last["rm"] == T0 + timedelta(days=3) and latest_promotion(store, "other") is None
        assert np.isclose(snapshot.promoted["rm"].parent_accuracy or 0, 0.75)
    finally:
        store.close()
