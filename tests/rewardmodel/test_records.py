"""Every accepted data form parses into the same PreferenceExample shape; bad rows name line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardmodel import DataError, PointLabel, PreferencePair, merge_pointwise, parse_record


def test_explicit_pair_with_margin() -> None:
    ex = parse_record({"prompt": "q", "chosen": "a", "rejected": "b", "margin": 2}, "f:1")
    assert ex.prompt == "q" and ex.completions == ("a", "b") and ex.pairs == (PreferencePair(0, 1, 2.0),)


def test_explicit_pair_with_message_prompt() -> None:
    ex = parse_record({"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}, "f:1")
    assert ex.prompt == [{"role": "user", "content": "q"}]


def test_hh_transcripts_split_at_the_shared_assistant_turn() -> None:
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    ex = parse_record(row, "f:1")
    assert ex.prompt == "\n\nHuman: hi\n\nAssistant:" and ex.completions == (" hello!", " go away")


def test_hh_reply_that_itself_contains_an_assistant_turn(hh_data: Path) -> None:
    # line 711 of the real data: the chosen reply continues with a second "Assistant:" turn
    row = json.loads(hh_data.read_text(encoding="utf-8").splitlines()[710])
    ex = parse_record(row, "hh:711")
    assert isinstance(ex.prompt, str)  # a transcript's prompt stays text
    assert ex.prompt.endswith("\n\nHuman: Yes, please find me a serial.\n\nAssistant:")
    assert "\n\nAssistant:" in ex.completions[0] and ex.completions[1].startswith(" You mean a password")
    assert ex.prompt + ex.completions[0] == row["chosen"] and ex.prompt + ex.completions[1] == row["rejected"]


def test_conversational_pair() -> None:
    user = {"role": "user", "content": "q"}
    ex = parse_record({"chosen": [user, {"role": "assistant", "content": "a"}],
                       "rejected": [user, {"role": "assistant", "content": "b"}]}, "f:1")
    assert ex.prompt == [user] and ex.completions == ("a", "b")


def test_ranking_expands_to_all_pairs_best_first() -> None:
    ex = parse_record({"prompt": "q", "completions": ["x", "y", "z"], "ranking": [2, 0, 1]}, "f:1")
    assert [(p.better, p.worse) for p in ex.pairs] == [(2, 0), (2, 1), (0, 1)]
    assert ex.completions == ("x", "y", "z")  # each completion once


def test_ranking_tie_groups_give_pairs_across_groups_only() -> None:
    ex = parse_record({"prompt": "q", "completions": ["x", "y", "z", "w"], "ranking": [[0, 2], 1, [3]]}, "f:1")
    assert [(p.better, p.worse) for p in ex.pairs] == [(0, 1), (2, 1), (0, 3), (2, 3), (1, 3)]


def test_scores_form_skips_ties() -> None:
    ex = parse_record({"prompt": "q", "completions": ["x", "y", "z"], "scores": [1.0, 3.0, 1.0]}, "f:1")
    assert [(p.better, p.worse) for p in ex.pairs] == [(1, 0), (1, 2)]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"chosen": "a"}, "unrecognised record"),
        ({"chosen": "a", "rejected": 3}, "both be strings"),
        ({"prompt": "q", "chosen": "a", "rejected": "a"}, "identical"),
        ({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}, "'margin'"),
        ({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}, "Assistant"),
        ({"prompt": "q", "completions": ["x", "y"], "ranking": [0, 0]}, "'ranking'"),
        ({"prompt": "q", "completions": ["x", "x"], "ranking": [0, 1]}, "duplicates"),
        ({"prompt": "q", "completions": ["x", "y"], "ranking": [[0, 1]]}, "ties every completion"),
        ({"prompt": "q", "completions": ["x", "y"], "ranking": [[], 0, 1]}, "tied completions"),
        ({"prompt": "q", "completions": ["x", "y"], "ranking": [True, 0]}, "'ranking'"),
        ({"completions": ["x", "y"], "ranking": [0, 1]}, "'prompt'"),
        ({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}, r"prompt\[0\]\.content"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_rows_name_where_and_what(row: object, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        parse_record(row, "data.jsonl:7")  # type: ignore[arg-type]
    assert str(info.value).startswith("data.jsonl:7: ")


def test_thumbs_and_ratings_are_pointwise_labels() -> None:
    up = parse_record({"prompt": "q", "completion": "a", "label": True}, "f:1")
    assert up.completions == ("a",) and up.pairs == () and up.points == (PointLabel(0, 1.0, "thumbs"),)
    rated = parse_record({"prompt": "q", "completion": "b", "rating": 2, "scale": [1, 5]}, "f:2")
    assert rated.points == (PointLabel(0, 0.25, "rating"),)


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "q", "completion": "a", "label": 1}, "'label' must be true"),
    ({"prompt": "q", "completion": "a"}, "needs 'label'"),
    ({"prompt": "q", "completion": "a", "rating": 3}, "'scale' must be"),
    ({"prompt": "q", "completion": "a", "rating": 3, "scale": [5, 1]}, "'scale' must be"),
    ({"prompt": "q", "completion": "a", "rating": 6, "scale": [1, 5]}, "within the scale"),
    ({"prompt": "q", "completion": "a", "rating": float("nan"), "scale": [1, 5]}, "within the scale"),
    ({"prompt": "q", "completion": 3, "label": True}, "'completion' must be a string"),
])
def test_bad_pointwise_rows_name_the_field(row: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_record(row, "f:7")


def test_ratings_of_one_prompt_merge_into_pairs_and_thumbs_do_not() -> None:
    rows: list[dict[str, object]] = [
            {"prompt": "q", "completion": "a", "rating": 5, "scale": [1, 5]},
            {"prompt": "other", "completion": "x", "label": True},
            {"prompt": "q", "completion": "b", "rating": 1, "scale": [1, 5]},
            {"prompt": "q", "completion": "a", "rating": 3, "scale": [1, 5]},  # a second annotator: mean 0.75
            {"prompt": "q", "completion": "c", "rating": 4, "scale": [0, 4]},  # another scale: 1.0 on its own
            {"prompt": "other", "completion": "y", "label": False},
            {"prompt": "q", "chosen": "a", "rejected": "b"}]
    merged = merge_pointwise([parse_record(r, f"f:{i}") for i, r in enumerate(rows)])
    assert len(merged) == 3
    q, other, pair = merged
    assert q.completions == ("a", "b", "c") and len(q.points) == 4
    assert set(q.pairs) == {PreferencePair(0, 1), PreferencePair(2, 0), PreferencePair(2, 1)}
    assert other.completions == ("x", "y") and other.pairs == ()  # thumbs count only through the pointwise loss
    assert pair.pairs == (PreferencePair(0, 1),) and pair.points == ()
