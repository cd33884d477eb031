"""The parity gate's arithmetic (export/parity.py) on hand-computed values, apart from any model."""

from __future__ import annotations

import numpy as np
import pytest

from export.errors import ParityError
from export.parity import THRESHOLDS, Parity, gate, measure, pair_index
from rewardmodel import PreferenceExample, PreferencePair

# two prompts: a pair (0 over 1), then a ranking of three (3 > 4 > 2, i.e. completions 1 > 2 > 0)
EXAMPLES = [
    PreferenceExample("p", ("a", "b"), (PreferencePair(0, 1),)),
    PreferenceExample("q", ("c", "d", "e"), (PreferencePair(1, 2), PreferencePair(1, 0), PreferencePair(2, 0))),
]


def test_pair_index_flattens_completions_example_by_example() -> None:
    better, worse = pair_index(EXAMPLES)
    assert better.tolist() == [0, 3, 3, 4] and worse.tolist() == [1, 4, 2, 2]


def test_measure_on_hand_computed_scores() -> None:
    reference = np.array([1.0, 0.0, -1.0, 2.0, 0.5])
    variant = np.array([1.1, 0.2, -0.5, 2.0, -2.0])  # flips 4 > 2 (0.5 > -1.0 became -2.0 < -0.5)
    parity = measure(reference, variant, EXAMPLES)
    assert (parity.items, parity.pairs) == (5, 4)
    assert parity.max_abs_diff == pytest.approx(2.5)
    assert parity.mean_abs_diff == pytest.approx((0.1 + 0.2 + 0.5 + 0.0 + 2.5) / 5)
    assert parity.pair_agreement == pytest.approx(3 / 4)  # (0,1), (3,4), (3,2) kept; (4,2) flipped
    # ranks: reference 4,2,1,5,3 / variant 4,3,2,5,1: Pearson of ranks by hand
    r, v = np.array([4, 2, 1, 5, 3.0]), np.array([4, 3, 2, 5, 1.0])
    expected = float(np.sum((r - 3) * (v - 3)) / np.sqrt(np.sum((r - 3) ** 2) * np.sum((v - 3) ** 2)))
    assert parity.spearman == pytest.approx(expected) and expected == pytest.approx(0.7)  # 7 / sqrt(10 * 10)
    assert measure(reference, reference.copy(), EXAMPLES).pair_agreement == 1.0


def test_gate_applies_each_variants_thresholds() -> None:
    def parity(max_abs: float, agreement: float) -> Parity:
        return Parity(items=10, pairs=5, max_abs_diff=max_abs, mean_abs_diff=max_abs / 2, spearman=1.0,
                      pair_agreement=agreement)

    assert gate("fp32", parity(5e-5, 1.0), force=False) == []
    with pytest.raises(ParityError, match=r"max_abs_diff 0\.0002 > 0\.0001"):
        gate("fp32", parity(2e-4, 1.0), force=False)
    assert gate("int8", parity(3.0, 0.98), force=False) == []  # int8: no max-diff limit, 0.98 agreement
    with pytest.raises(ParityError, match=r"pair_agreement 0\.9700 < 0\.98"):
        gate("int8", parity(0.1, 0.97), force=False)
    assert gate("fp16", parity(0.06, 0.995), force=True) == ["max_abs_diff 0.06 > 0.05"]  # forced: written
    assert THRESHOLDS["fp16"].pair_agreement == 0.99
