"""A thin subclass of transformers' ``Trainer`` for reward modelling.

It only wires things: the Bradley–Terry loss over the collator's pair indices, mixed with the pointwise
loss over its labelled rows, pair accuracy in the training logs, and evaluation through
:func:`training.evaluation.evaluate_model` (the same code as ``rewardserve eval``). Everything else —
DDP/FSDP under ``torchrun``/``accelerate launch``, mixed precision, gradient checkpointing, checkpoints
and resuming, the progress bar — is the Trainer's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import Trainer

from training.losses import bradley_terry_loss, centering_penalty, pointwise_loss
from training.modeling import model_kwargs

EvalFn = Callable[[torch.nn.Module], dict[str, float]]


BIAS = "pointwise_bias"
"""The learned b of σ(r − b): a parameter attached to the model while training, so the optimizer and DDP see
it; :func:`detach_bias` takes it off before the bundle is saved."""


def attach_bias(model: torch.nn.Module) -> None:
    """Give ``model`` a learned pointwise bias, zero at first.

    DDP (``find_unused_parameters``, transformers' default) marks every parameter the forward's output does
    not reach as ready when the forward ends; the bias, used only in the loss, would then be marked again by
    its gradient and the step fails. A forward hook adds ``0 · b`` to the logits so the output reaches it:
    the rewards are unchanged, and its gradient comes through the loss alone."""
    model.register_parameter(BIAS, torch.nn.Parameter(torch.zeros((), device=next(model.parameters()).device)))

    def reach_bias(module: torch.nn.Module, _args: Any, output: Any) -> Any:
        output.logits = output.logits + 0.0 * module.get_parameter(BIAS)
        return output

    model._reach_bias = model.register_forward_hook(reach_bias)  # type: ignore[assignment]


def detach_bias(model: torch.nn.Module) -> float | None:
    """Remove the learned pointwise bias from ``model``; return its value (None when there was none)."""
    if BIAS not in model._parameters:
        return None
    model.__dict__.pop("_reach_bias").remove()
    bias = model._parameters.pop(BIAS)
    return None if bias is None else float(bias.detach())


class RewardTrainer(Trainer):
    """``Trainer`` with a pairwise loss mixed with a pointwise one; ``evaluate`` delegates to an evaluation
    function.

    ``pointwise_bias``: b of σ(r − b) for thumbs and ratings, or None to learn it (attached to the model)."""

    def __init__(
        self, *args: Any, use_margin: bool = True, center_rewards_coefficient: float = 0.0,
        pointwise_weight: float = 1.0, pointwise_bias: float | None = None, eval_fn: EvalFn | None = None,
        criteria_weights: Sequence[float] | None = None, **kwargs: Any,
    ) -> None:
        model = kwargs["model"]
        if pointwise_bias is None and BIAS not in model._parameters:
            attach_bias(model)
        super().__init__(*args, **kwargs)
        self.pointwise_weight = pointwise_weight
        self.pointwise_bias = pointwise_bias
        self._bias_owner: torch.nn.Module = model
        self.use_margin = use_margin
        self.center_rewards_coefficient = center_rewards_coefficient
        self.eval_fn = eval_fn
        # a criteria model: the head's outputs are the criteria, the reward their weighted sum
        self.criteria_weights = None if criteria_weights is None else torch.tensor(list(criteria_weights))
        self._pair_stats = [0.0, 0.0]  # correct, seen since the last log

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = model(**model_kwargs(inputs)).logits
        if self.criteria_weights is None:
            rewards = outputs.squeeze(-1)
        else:
            rewards = outputs @ self.criteria_weights.to(outputs.device, outputs.dtype)
        chosen, rejected = rewards[inputs["better"]], rewards[inputs["worse"]]
        weight = inputs["pair_weight"]
        # every term is in the graph, empty or not, so each rank of a DDP run gives every parameter a
        # gradient (a batch of thumbs only, or of pairs only, would otherwise leave the bias or nothing)
        bias = self._bias_owner._parameters.get(BIAS) if self.pointwise_bias is None else self.pointwise_bias
        bias_term = 0.0 * bias if isinstance(bias, torch.Tensor) else 0.0
        loss = outputs.sum() * 0.0 + bias_term
        if chosen.numel():
            examples = inputs.get("pair_examples")
            loss = loss + bradley_terry_loss(chosen, rejected, inputs["margin"] if self.use_margin else None, weight,
                                             examples)
            if self.center_rewards_coefficient:
                loss = loss + self.center_rewards_coefficient * centering_penalty(chosen, rejected, weight, examples)
        if inputs["point"].numel():
            loss = loss + self.pointwise_weight * pointwise_loss(
                rewards[inputs["point"]], inputs["point_target"], bias if bias is not None else 0.0)
        if self.criteria_weights is not None:
            loss = loss + self._criteria_loss(outputs, inputs)
        with torch.no_grad():
            self._pair_stats[0] += float((chosen > rejected).sum())
            self._pair_stats[1] += chosen.numel()
        return (loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}) if return_outputs else loss

    def _criteria_loss(self, outputs: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each criterion's output learns its own ratings (cross-entropy, as thumbs and ratings do; the head's
        per-output bias is its b) and its own pairs (Bradley–Terry)."""
        loss = outputs.sum() * 0.0
        if inputs["crit_row"].numel():
            rated = outputs[inputs["crit_row"], inputs["crit_col"]]
            loss = loss + self.pointwise_weight * pointwise_loss(rated, inputs["crit_target"])
        if inputs["cpair_better"].numel():
            column = inputs["cpair_col"]
            loss = loss + bradley_terry_loss(outputs[inputs["cpair_better"], column],
                                             outputs[inputs["cpair_worse"], column])
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._pair_stats[1]:
            logs["pair_accuracy"] = round(self._pair_stats[0] / self._pair_stats[1], 4)
            self._pair_stats = [0.0, 0.0]
        super().log(logs, start_time)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Sequence[str] | None = None, metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        if self.eval_fn is None:
            return {}
        assert self.model is not None
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.eval_fn(self.model).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
