"""Reward-model losses as pure functions of reward tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    examples: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Bradley–Terry pairwise loss ``-log σ(r_c - r_r - margin)``, averaged with optional per-pair weights.

    ``margin`` (Llama 2's reward-model trick) asks pairs rated as clearly better to be separated by at
    least that much. ``weight`` lets a k-way ranking count as one example (InstructGPT: each of its
    C(k, 2) pairs weighs 1 / C(k, 2)); the weighted sum is divided by ``examples``, the pair-bearing examples of
    the batch (default: the weights' sum). So a weak pair (an implicit signal's, weight below 1) counts less than an
    explicit one even in a batch of weak pairs only; with every weight 1 per example the two are the same.
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    losses = -F.logsigmoid(diff)
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / (weight.sum() if examples is None else examples)


def centering_penalty(chosen: torch.Tensor, rejected: torch.Tensor, weight: torch.Tensor | None = None,
                      examples: torch.Tensor | float | None = None) -> torch.Tensor:
    """``mean((r_c + r_r)^2)``: pulls the rewards of each pair towards zero sum (Eisenstein et al., 2023).

    Added with a small coefficient it keeps rewards centred, which the Bradley–Terry loss alone leaves free.
    """
    sq = (chosen + rejected) ** 2
    if weight is None:
        return sq.mean()
    return (sq * weight).sum() / (weight.sum() if examples is None else examples)


def pointwise_loss(rewards: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Binary cross-entropy of σ(r − b) against ``targets`` in [0, 1], averaged: a thumb is 1 or 0, a rating
    its place on its scale. ``b`` is the reward at which a reply is as likely up as down."""
    return F.binary_cross_entropy_with_logits(rewards - bias, targets)
