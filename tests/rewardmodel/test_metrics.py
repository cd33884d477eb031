"""Pairwise metrics against hand-computed values."""

from __future__ import annotations

import pytest

from rewardmodel import PointLabel, PreferenceExample, PreferencePair, pairwise_report
from rewardmodel.metrics import rankdata, roc_auc


def _pair(where: str) -> PreferenceExample:
    return PreferenceExample("q", ("a", "b"), (PreferencePair(0, 1),), where)


def test_accuracy_counts_ties_as_wrong_and_margin_is_the_mean_difference() -> None:
    examples = [_pair("1"), _pair("2"), _pair("3"), _pair("4")]
    scores = [[2.0, 1.0], [0.5, 0.5], [-1.0, 1.0], [3.0, 0.0]]
    lengths = [[10, 20], [40, 40], [100, 50], [300, 280]]
    r = pairwise_report(examples, scores, lengths)
    assert r.pairs == 4
    assert r.accuracy == 0.5  # the tie is wrong
    assert r.mean_margin == pytest.approx((1.0 + 0.0 - 2.0 + 3.0) / 4)
    assert r.accuracy_by_length == {
        "0-31": {"pairs": 1, "accuracy": 1.0},
        "32-63": {"pairs": 1, "accuracy": 0.0},
        "64-127": {"pairs": 1, "accuracy": 0.0},
        "256-511": {"pairs": 1, "accuracy": 1.0},
    }
    # pairs whose lengths differ: 1 (b longer, data prefers shorter), 3 (a longer, better), 4 (a longer, better)
    assert r.data_prefers_longer == pytest.approx(2 / 3)
    # model picks: 1 -> a (shorter), 3 -> b (shorter), 4 -> a (longer)
    assert r.model_prefers_longer == pytest.approx(1 / 3)
    flat = [2.0, 1.0, 0.5, 0.5, -1.0, 1.0, 3.0, 0.0]
    assert r.reward_mean == pytest.approx(sum(flat) / 8)


def test_ranking_pairs_and_length_correlation() -> None:
    ex = PreferenceExample("q", ("x", "y", "z"), (PreferencePair(0, 1), PreferencePair(0, 2), PreferencePair(1, 2)))
    r = pairwise_report([ex], [[3.0, 2.0, 1.0]], [[30, 20, 10]])
    assert r.accuracy == 1.0 and r.mean_margin == pytest.approx((1 + 2 + 1) / 3)
    assert r.length_pearson == pytest.approx(1.0) and r.length_spearman == pytest.approx(1.0)


def test_rankdata_averages_ties() -> None:
    import numpy as np

    assert rankdata(np.array([10.0, 20.0, 10.0, 5.0])).tolist() == [2.5, 4.0, 2.5, 1.0]


def test_one_score_per_completion_is_enforced() -> None:
    with pytest.raises(ValueError, match="one score and one length per completion"):
        pairwise_report([_pair("x")], [[1.0]], [[1, 2]])


def test_roc_auc_is_the_chance_an_up_vote_outscores_a_down_vote() -> None:
    import numpy as np

    scores = np.asarray([0.9, 0.4, 0.4, 0.1, 0.6])
    up = np.asarray([True, True, False, False, False])
    # up/down pairs: (0.9 > 0.4, 0.1, 0.6) = 3; (0.4 = 0.4 half, > 0.1, < 0.6) = 1.5; of 6
    assert roc_auc(scores, up) == pytest.approx(4.5 / 6)
    assert roc_auc(scores, np.ones(5, dtype=bool)) is None


def test_thumbs_only_data_report_correlation_and_no_pair_figures() -> None:
    examples = [PreferenceExample("q", ("a",), (), str(i), (PointLabel(0, t, "thumbs"),))
                for i, t in enumerate([1.0, 0.0, 1.0, 0.0])]
    r = pairwise_report(examples, [[2.0], [1.0], [0.5], [-1.0]], [[5], [5], [5], [5]])
    assert r.pairs == 0 and r.accuracy is None and r.mean_margin is None and r.model_prefers_longer is None
    assert r.pointwise is not None and (r.pointwise.thumbs, r.pointwise.ratings) == (4, 0)
    assert r.pointwise.auc == pytest.approx(3 / 4)  # 0.5 (up) loses to 1.0 (down); the other three pairs win
    # ranks of the rewards 4, 3, 2, 1 against the targets' 3.5, 1.5, 3.5, 1.5
    assert r.pointwise.spearman == pytest.approx(0.4472136, abs=1e-6)


def test_ratings_beside_pairs_give_both_figures() -> None:
    labels = (PointLabel(0, 1.0, "rating"), PointLabel(1, 0.5, "rating"), PointLabel(2, 0.0, "rating"))
    rated = PreferenceExample("q", ("a", "b", "c"), (PreferencePair(0, 1),), "1", labels)
    r = pairwise_report([rated], [[3.0, 1.0, 2.0]], [[1, 1, 1]])
    assert r.accuracy == 1.0 and r.pointwise is not None and r.pointwise.auc is None
    assert r.pointwise.spearman == pytest.approx(0.5) and r.pointwise.pearson == pytest.approx(0.5)


def test_annotator_agreement_is_the_ceiling_beside_the_models_figure() -> None:
    def pair(a: str, b: str, votes: tuple[int, int] | None = None) -> PreferenceExample:
        return PreferenceExample("q", (a, b), (PreferencePair(0, 1, 0.0, votes),), a + b)

    # item (x, y): three annotators say x > y, one says y > x; item (u, v): a 2-1 vote record; (p, q) once
    examples = [pair("x", "y"), pair("x", "y"), pair("y", "x"), pair("x", "y"), pair("u", "v", (2, 1)),
                pair("p", "q")]
    score = {"x": 1.0, "y": 0.0, "u": 0.0, "v": 1.0, "p": 1.0, "q": 0.0}
    scores = [[score[c] for c in ex.completions] for ex in examples]
    r = pairwise_report(examples, scores, [[1, 1]] * len(examples))
    assert r.annotators == {"items": 2, "judgements": 7, "agreement": pytest.approx((3 + 2) / 7),
                            "model": pytest.approx((3 + 1) / 7)}  # the model orders x > y (3 agree) and v > u (1)
    assert pairwise_report(examples[-1:], scores[-1:], [[1, 1]]).annotators is None
