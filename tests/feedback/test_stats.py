"""Counts, inter-annotator agreement, live accuracy, and the rolling agreement metric."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from feedback.events import FeedbackEvent
from feedback.metrics import MAX_LABEL_VALUES, WINDOW_S, FeedbackMetrics
from feedback.stats import annotator_agreement, feedback_stats
from feedback.store import FeedbackStore

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ITEM = {"prompt": "q", "completions": ["a", "b", "c"]}


def ev(**fields: Any) -> FeedbackEvent:
    return FeedbackEvent.model_validate({**ITEM, **fields})


def test_agreement_counts_shared_pairs_between_annotators(store_url: str) -> None:
    store = FeedbackStore(store_url)
    store.add([
        ev(id="1", annotator="x", ranking=[0, 1, 2]),
        ev(id="2", annotator="y", ranking=[0, 2, 1]),      # agrees with x on a>b, a>c; not on b vs c
        ev(id="3", annotator="z", choice=0),                # a>b, a>c: agrees with x and y on both
        ev(id="4", annotator="x", prompt="other", choice=1),  # another item, judged by one annotator only
        ev(id="5", choice=0),                               # no annotator: not part of agreement
    ], NOW)
    stats = feedback_stats(store)
    # x-y: 3 shared pairs, 2 agree; x-z: 2 of 2; y-z: 2 of 2 -> 6 of 7
    assert stats["agreement"] == {"items": 1, "comparisons": 7, "ratio": 6 / 7}
    assert stats["events"] == 5 and stats["by_form"] == {"choice": 3, "ranking": 2}
    assert stats["by_annotator"] == {"x": 2, "none": 1, "y": 1, "z": 1}


def test_each_annotator_sees_their_own_agreement(store_url: str) -> None:
    """What the labeling page shows: only the comparisons of that annotator with the others."""
    store = FeedbackStore(store_url)
    store.add([
        ev(id="1", annotator="x", ranking=[0, 1, 2]),
        ev(id="2", annotator="y", ranking=[0, 2, 1]),
        ev(id="3", annotator="z", choice=0),
        ev(id="4", annotator="x", prompt="other", choice=1),  # judged by x alone: nothing to compare
        ev(id="5", annotator="w", prompt="elsewhere", choice=1),
        ev(id="6", annotator="y", prompt="elsewhere", choice=0),  # y and w share one pair there (a vs b): opposed
    ], NOW)
    assert annotator_agreement(store, "x") == {"items": 1, "comparisons": 5, "ratio": 4 / 5}  # 2 of 3 with y, 2 of 2 z
    assert annotator_agreement(store, "y") == {"items": 2, "comparisons": 6, "ratio": 4 / 6}  # 2/3 x, 2/2 z, 0/1 w
    assert annotator_agreement(store, "z") == {"items": 1, "comparisons": 4, "ratio": 1.0}
    assert annotator_agreement(store, "nobody") == {"items": 0, "comparisons": 0, "ratio": None}


def test_a_later_judgement_by_the_same_annotator_replaces_the_earlier(store_url: str) -> None:
    store = FeedbackStore(store_url)
    store.add([ev(id="1", annotator="x", choice=1, created_at="2026-11-01T00:00:00Z"),
               ev(id="2", annotator="x", choice=0, created_at="2026-11-02T00:00:00Z"),
               ev(id="3", annotator="y", choice=0)], NOW)
    assert feedback_stats(store)["agreement"] == {"items": 1, "comparisons": 2, "ratio": 1.0}


def test_live_accuracy_per_reward_model(store_url: str) -> None:
    store = FeedbackStore(store_url)
    store.add([
        ev(id="1", choice=0, scores=[3.0, 1.0, 2.0], reward_model="rm-a"),   # 2 of 2
        ev(id="2", ranking=[2, 1, 0], scores=[3.0, 1.0, 2.0], reward_model="rm-a"),  # c>b yes, c>a no, b>a no
        ev(id="3", ratings=[1, -1, None], scores=[0.5, 0.5, 0.0], reward_model="rm-b"),  # a tie: wrong
        ev(id="4", choice=1),  # no scores
    ], NOW)
    assert feedback_stats(store)["live_accuracy"] == {"rm-a": {"pairs": 5, "accuracy": 3 / 5},
                                                      "rm-b": {"pairs": 1, "accuracy": 0.0}}


def sample(registry: CollectorRegistry, line_start: str) -> float | None:
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_agreement_metric_covers_the_last_hour_only() -> None:
    registry = CollectorRegistry()
    metrics = FeedbackMetrics(registry)
    metrics.stored([ev(id="1", choice=0, scores=[3.0, 1.0, 2.0], reward_model="rm")], now=0.0)
    metrics.stored([ev(id="2", choice=1, scores=[3.0, 1.0, 2.0], reward_model="rm", source="chat-ui")],
                   now=WINDOW_S - 10)
    ratio = lambda now: next(iter(metrics.collect(now=now))).samples  # noqa: E731
    assert [s.value for s in ratio(WINDOW_S - 5)] == [2 / 4]
    assert [s.value for s in ratio(WINDOW_S + 5)] == [0.0]  # the first event left the window
    assert sample(registry, 'rewardserve_feedback_events_total{form="choice",source="chat-ui"}') == 1.0
    assert sample(registry, 'rewardserve_feedback_events_total{form="thumbs",source="none"}') == 0.0


def test_client_chosen_labels_cannot_explode_the_series() -> None:
    registry = CollectorRegistry()
    metrics = FeedbackMetrics(registry)
    metrics.stored([ev(id=str(i), choice=0, source=f"s{i}") for i in range(MAX_LABEL_VALUES + 5)])
    assert sample(registry, 'rewardserve_feedback_events_total{form="choice",source="other"}') == 5.0
