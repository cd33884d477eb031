"""The math of personal rewards: basis heads, the simplex, a user's weights, and the heads' file in a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rewardmodel.errors import BundleError
from rewardmodel.personal import BasisHeads, bundle_basis, fit_profile, fit_weights, own_head, project_simplex


def heads(k: int = 3, width: int = 4, seed: int = 0) -> BasisHeads:
    rng = np.random.default_rng(seed)
    return BasisHeads(rng.normal(size=(k, width)), np.full(k, 0.5))


def test_the_population_weights_give_head_zero_exactly() -> None:
    basis = heads()
    rows = np.random.default_rng(1).normal(size=(5, 4))
    assert basis.population.tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(basis.reward(rows, basis.population), rows @ basis.weight[0] + 0.5)
    sigmoid = BasisHeads(basis.weight, basis.bias, "sigmoid")
    plain = rows @ basis.weight[0] + 0.5
    np.testing.assert_allclose(sigmoid.reward(rows, basis.population), 1 / (1 + np.exp(-plain)))


def test_rows_of_another_width_are_refused() -> None:
    with pytest.raises(BundleError, match="rows of 4"):
        heads().outputs(np.zeros((2, 5)))


@pytest.mark.parametrize("v", [[0.2, 0.3, 0.5], [3.0, -1.0, 0.5], [-2.0, -2.0, -2.0], [0.0, 0.0, 10.0]])
def test_the_projection_lands_on_the_simplex_and_keeps_points_of_it(v: list[float]) -> None:
    p = project_simplex(np.asarray(v))
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    if min(v) >= 0 and sum(v) == pytest.approx(1.0):
        np.testing.assert_allclose(p, v)
    # no point of the simplex is nearer (a few random ones checked)
    for q in np.random.default_rng(0).dirichlet(np.ones(3), 50):
        assert np.linalg.norm(p - v) <= np.linalg.norm(q - v) + 1e-12


def test_a_users_weights_move_to_the_head_that_orders_their_pairs_and_stay_without_pairs() -> None:
    # head 2 orders every pair the user's way, heads 0 and 1 the other way
    margins = np.tile([-1.0, -0.5, 2.0], (30, 1))
    prior = np.array([1.0, 0.0, 0.0])
    w = fit_weights(margins, prior)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0) and w[2] > 0.9
    assert (margins @ w > 0).all()
    np.testing.assert_allclose(fit_weights(np.zeros((0, 3)), prior), prior)
    # a few pairs move the weights less far than many (the prior holds a new user near the population)
    few = fit_weights(margins[:2] * 0.1, prior)
    assert few[2] < fit_weights(margins * 0.1, prior)[2]


def test_a_profile_below_min_judgements_is_the_populations() -> None:
    basis = BasisHeads(heads().weight, heads().bias, min_judgements=5)
    rows = np.random.default_rng(2).normal(size=(8, 4))
    few = fit_profile(basis, "ann", rows[:4], rows[4:])
    assert few.weights == (1.0, 0.0, 0.0) and few.judgements == 4 and few.basis == basis.id
    assert fit_profile(basis, "ann", rows[:5], rows[3:]).judgements == 5


def test_own_head_weighs_the_criteria_as_the_card_says() -> None:
    w, b = own_head([[1.0, 0.0], [0.0, 2.0]], [0.5, 1.0], [0.25, 0.75])
    np.testing.assert_allclose(w, [0.25, 1.5])
    assert b == pytest.approx(0.875)
    with pytest.raises(BundleError, match="criteria weights"):
        own_head([[1.0, 0.0]], [0.0], [0.5, 0.5])


def test_the_heads_survive_their_file_and_their_id_is_their_content(tmp_path: Path) -> None:
    basis = heads()
    basis.save(tmp_path)
    again = bundle_basis(tmp_path, {"file": "personal.safetensors", "min_judgements": 7})
    np.testing.assert_array_equal(again.weight, basis.weight)
    assert again.id == basis.id and again.min_judgements == 7
    assert heads(seed=1).id != basis.id
    with pytest.raises(BundleError, match="personalize fit"):
        bundle_basis(tmp_path, {})
    with pytest.raises(BundleError, match="K ≥ 2"):
        BasisHeads(np.zeros((1, 4)), np.zeros(1))
