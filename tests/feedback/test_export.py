"""Export to the training forms (JSONL and Parquet, all or majority), and the store as a training source."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedback.errors import InvalidFeedback
from feedback.events import FeedbackEvent
from feedback.export import export, implicit_weights
from feedback.store import FeedbackStore, Filters
from rewardmodel import DataError
from rewardmodel.sources import load_examples
from tests.feedback import events

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def filled(url: str, rows: list[dict[str, object]]) -> FeedbackStore:
    store = FeedbackStore(url)
    store.add([FeedbackEvent.model_validate(r) for r in rows], NOW)
    return store


def test_each_form_becomes_the_training_form_of_its_kind(tmp_path: Path) -> None:
    store = filled(str(tmp_path / "f.db"), [events.choice(1), events.ranking(1), events.ratings(1), events.thumbs(1)])
    report = export(store, tmp_path / "out.jsonl")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records == [
        {"id": "choice-1#1", "prompt": "question 1", "chosen": "good 1", "rejected": "bad 1"},
        {"id": "choice-1#2", "prompt": "question 1", "chosen": "good 1", "rejected": "meh 1"},
        {"id": "ranking-1", "prompt": [{"role": "user", "content": "question 1"}],
         "completions": ["good 1", "bad 1", "meh 1"], "ranking": [0, [1, 2]]},
        {"id": "ratings-1#0", "prompt": "question 1", "completion": "good 1", "rating": 5.0, "scale": [1.0, 5.0],
         "criteria": {"helpful": 5.0}},
        {"id": "ratings-1#1", "prompt": "question 1", "completion": "bad 1", "rating": 1.0, "scale": [1.0, 5.0],
         "criteria": {"helpful": 2.0}},
        {"id": "thumbs-1#0", "prompt": "question 1", "completion": "bad 1", "label": False},
    ]
    assert report.to_dict() == {"events": 4, "records": 6, "by_form": {"choice": 1, "ranking": 1, "ratings": 1,
                                                                       "thumbs": 1}, "skipped": {}}
    # what training reads back: the ranking's tie group gives no pair inside it; the two ratings of question 1
    # gather with the thumb of the same prompt into one example, whose one pair comes from the ratings
    read = load_examples(str(tmp_path / "out.jsonl"))
    assert [[(p.better, p.worse) for p in ex.pairs] for ex in read] == [[(0, 1)], [(0, 1)], [(0, 1), (0, 2)], [(0, 1)]]
    assert read[3].completions == ("good 1", "bad 1")
    assert [(p.index, p.target, p.kind) for p in read[3].points] == [(0, 1.0, "rating"), (1, 0.0, "rating"),
                                                                   (1, 0.0, "thumbs")]
    assert [(c.index, c.name, c.target) for c in read[3].criteria] == [(0, "helpful", 1.0), (1, "helpful", 0.25)]
    assert [(p.name, p.better, p.worse) for p in read[3].criterion_pairs] == [("helpful", 0, 1)]


def test_implicit_signals_become_weighted_pairs_and_training_weighs_them(tmp_path: Path) -> None:
    store = filled(str(tmp_path / "f.db"), [events.implicit("regenerate", 1), events.implicit("copy", 2),
                                            events.implicit("continue", 3), events.choice(4)])
    export(store, tmp_path / "default.jsonl")
    records = [json.loads(line) for line in (tmp_path / "default.jsonl").read_text().splitlines()]
    assert [(r["chosen"], r["rejected"], r.get("weight")) for r in records] == [  # in id order: one time
        ("good 4", "bad 4", None), ("good 4", "meh 4", None), ("second 3", "first 3", 0.2),
        ("second 2", "first 2", 0.5), ("second 1", "first 1", 0.5)]
    # the flag's weights, and 0 leaves a form out (counted)
    report = export(store, tmp_path / "set.jsonl", weights=implicit_weights(["copy=0.9", "continue=0"]))
    again = [json.loads(line) for line in (tmp_path / "set.jsonl").read_text().splitlines()]
    assert [r.get("weight") for r in again] == [None, None, 0.9, 0.5]
    assert report.skipped == {"continue weighted 0": 1}
    for bad in (["copy"], ["thumbs=0.5"], ["copy=2"]):
        with pytest.raises(InvalidFeedback):
            implicit_weights(bad)
    # training reads the weight: a weak pair counts its weight against an explicit pair's 1
    examples = load_examples(str(tmp_path / "default.jsonl"))
    assert [p.weight for ex in examples for p in ex.pairs] == [1.0, 1.0, 0.2, 0.5, 0.5]


def test_parquet_holds_the_same_preferences(tmp_path: Path) -> None:
    rows = [events.choice(1), events.ratings(1), events.thumbs(3), {**events.ranking(2), "prompt": "question 2"}]
    store = filled(str(tmp_path / "f.db"), rows)
    export(store, tmp_path / "out.jsonl")
    export(store, tmp_path / "out.parquet")
    as_pairs = lambda path: [(ex.prompt, ex.completions, ex.pairs, ex.points)  # noqa: E731
                             for ex in load_examples(str(path))]
    assert as_pairs(tmp_path / "out.parquet") == as_pairs(tmp_path / "out.jsonl")


def test_parquet_refuses_mixed_prompt_types_and_leaves_no_file(tmp_path: Path) -> None:
    store = filled(str(tmp_path / "f.db"), [events.choice(1), events.ranking(1)])
    with pytest.raises(InvalidFeedback, match=r"export to \.jsonl"):
        export(store, tmp_path / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.db", "f.db-shm", "f.db-wal"]
    with pytest.raises(InvalidFeedback, match=r"\.jsonl or \.parquet"):
        export(store, tmp_path / "out.csv")


def test_majority_pools_annotators_and_drops_even_votes(tmp_path: Path) -> None:
    item = {"prompt": "q", "completions": ["a", "b", "c"]}
    store = filled(str(tmp_path / "f.db"), [
        {**item, "id": "1", "annotator": "x", "ranking": [0, 1, 2]},
        {**item, "id": "2", "annotator": "y", "completions": ["c", "b", "a"], "choice": 2},  # a first, same item
        {**item, "id": "3", "annotator": "z", "ranking": [1, 0, 2]},
        {**item, "id": "4", "annotator": "z", "ratings": [1, -1, None]},  # thumbs: one record per vote
    ])
    report = export(store, tmp_path / "m.jsonl", aggregate="majority")
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    verdicts = {(r["chosen"], r["rejected"]): r["votes"] for r in records if "chosen" in r}
    assert [(r["completion"], r["label"]) for r in records if "label" in r] == [("a", True), ("b", False)]
    # a>b: x, y vs z (2-1); a>c: x, y, z (3-0); b>c: x, z vs y's c>b... y chose a only, so b-c is x, z (2-0)
    assert verdicts == {("a", "b"): {"for": 2, "against": 1}, ("a", "c"): {"for": 3, "against": 0},
                        ("b", "c"): {"for": 2, "against": 0}}
    assert report.skipped == {} and report.records == 5


def test_the_store_is_a_training_source_with_the_same_filters(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    filled(str(db), [events.choice(1, source="chat-ui"), events.ratings(2, source="labeling"),
                     events.choice(3, source="chat-ui", created_at="2026-01-01T00:00:00Z")])
    assert len(load_examples(f"sqlite:///{db}")) == 5  # a choice of three: 2 pair records each; ratings: 1
    assert [ex.completions for ex in load_examples(f"sqlite:///{db}?source=labeling")] == [("good 2", "bad 2")]
    assert len(load_examples(f"sqlite:///{db}?since=2026-06-01&source=chat-ui")) == 2
    assert len(load_examples(f"sqlite:///{db}?aggregate=majority")) == 5
    with pytest.raises(DataError, match="not an RFC 3339 time"):
        load_examples(f"sqlite:///{db}?since=yesterday")
    with pytest.raises(DataError, match="no feedback database"):
        load_examples(f"sqlite:///{tmp_path}/typo.db")
    with pytest.raises(DataError, match=r"mysql://u:\*\*\*@h/db: no reader for mysql://"):
        load_examples("mysql://u:secret@h/db")


def test_export_from_postgresql_equals_export_from_sqlite(tmp_path: Path, pg_url: str) -> None:
    rows = [events.choice(1), events.ranking(1), events.ratings(1), events.thumbs(1)]
    for name, url in (("sqlite", str(tmp_path / "f.db")), ("pg", pg_url)):
        export(filled(url, rows), tmp_path / f"{name}.jsonl", Filters())
    assert (tmp_path / "pg.jsonl").read_text() == (tmp_path / "sqlite.jsonl").read_text()
    assert len(load_examples(pg_url)) == 4  # training reads PostgreSQL directly too
