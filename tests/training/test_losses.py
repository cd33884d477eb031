"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import bradley_terry_loss, centering_penalty, pointwise_loss


def nll(x: float) -> float:
    return math.log1p(math.exp(-x))  # -log(sigmoid(x))


def test_bradley_terry_is_mean_negative_log_sigmoid_of_the_difference() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    expected = (nll(1.0) + nll(0.0) + nll(-2.0)) / 3  # 0.31326, 0.69315, 2.12693
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx((0.3132617 + 0.6931472 + 2.1269280) / 3, abs=1e-6)


def test_margin_is_subtracted_inside_the_sigmoid() -> None:
    loss = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0]), margin=torch.tensor([1.5]))
    assert loss.item() == pytest.approx(nll(0.5), abs=1e-6)  # 0.474077


def test_weights_make_a_ranking_count_once() -> None:
    # one pair (diff 1) and a 3-way ranking whose three pairs have diff 0: weights 1, 1/3, 1/3, 1/3
    chosen, rejected = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4)
    weight = torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3])
    loss = bradley_terry_loss(chosen, rejected, weight=weight)
    assert loss.item() == pytest.approx((nll(1.0) + nll(0.0)) / 2, abs=1e-6)


def test_a_weak_pair_counts_its_weight_even_alone_in_its_batch() -> None:
    """An implicit signal's pair (weight 0.25) divided by the examples, not the weights: a quarter of the loss an
    explicit pair of the same difference gives, in a batch of its own too."""
    chosen, rejected = torch.tensor([0.0]), torch.tensor([1.0])
    explicit = bradley_terry_loss(chosen, rejected, weight=torch.tensor([1.0]), examples=1.0)
    weak = bradley_terry_loss(chosen, rejected, weight=torch.tensor([0.25]), examples=1.0)
    assert torch.isclose(weak, 0.25 * explicit)
    # with a weight of 1 per example, dividing by examples is what dividing by the weights' sum was
    ranked = torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3])
    pairs = (torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4))
    by_examples = bradley_terry_loss(*pairs, weight=ranked, examples=2.0)
    assert torch.isclose(by_examples, bradley_terry_loss(*pairs, weight=ranked))


def test_centering_penalty() -> None:
    assert centering_penalty(torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0])).item() == pytest.approx(2.0)


def test_gradient_pushes_chosen_up_and_rejected_down() -> None:
    chosen, rejected = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert chosen.grad.item() == pytest.approx(-0.5) and rejected.grad.item() == pytest.approx(0.5)


def test_pointwise_loss_is_binary_cross_entropy_of_the_reward_less_the_bias() -> None:
    # thumbs up at r = 2 with b = 0.5: -log σ(1.5) = 0.201413; thumbs down at r = 0: -log(1 - σ(-0.5)) =
    # -log σ(0.5) = 0.474077; a rating at 0.25 of its scale, r = 0.5: 0.25·(-log σ(0)) + 0.75·(-log σ(0)) = 0.693147
    rewards, targets = torch.tensor([2.0, 0.0, 0.5]), torch.tensor([1.0, 0.0, 0.25])
    expected = (nll(1.5) + nll(0.5) + nll(0.0)) / 3
    assert expected == pytest.approx((0.2014133 + 0.4740770 + 0.6931472) / 3, abs=1e-6)
    assert pointwise_loss(rewards, targets, 0.5).item() == pytest.approx(expected, abs=1e-6)
    # a soft target off the middle: 0.25·(-log σ(1)) + 0.75·(-log σ(-1)) = 0.25·0.313262 + 0.75·1.313262
    assert pointwise_loss(torch.tensor([1.0]), torch.tensor([0.25])).item() == pytest.approx(1.063262, abs=1e-6)


def test_pointwise_bias_gets_the_gradient_a_learned_bias_needs() -> None:
    bias = torch.zeros((), requires_grad=True)
    pointwise_loss(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), bias).backward()
    # d/db of -log(1 - σ(r - b)) = -σ(r - b) = -0.731059 per label, averaged over two
    assert bias.grad is not None and bias.grad.item() == pytest.approx(-0.7310586, abs=1e-6)
