"""A thin subclass of transformers' ``Trainer`` for pairwise reward modelling.

It only wires things: the Bradley–Terry loss over the collator's pair indices, pair accuracy in the
training logs, and evaluation through :func:`training.evaluation.evaluate_model` (the same code as
``rewardserve eval``). Everything else — DDP/FSDP under ``torchrun``/``accelerate launch``, mixed
precision, gradient checkpointing, checkpoints and resuming, the progress bar — is the Trainer's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import Trainer

from training.losses import bradley_terry_loss, centering_penalty
from training.modeling import model_kwargs

EvalFn = Callable[[torch.nn.Module], dict[str, float]]


class RewardTrainer(Trainer):
    """``Trainer`` with a pairwise loss; ``evaluate`` delegates to an evaluation function."""

    def __init__(
        self, *args: Any, use_margin: bool = True, center_rewards_coefficient: float = 0.0,
        eval_fn: EvalFn | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.use_margin = use_margin
        self.center_rewards_coefficient = center_rewards_coefficient
        self.eval_fn = eval_fn
        self._pair_stats = [0.0, 0.0]  # correct, seen since the last log

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rewards = model(**model_kwargs(inputs)).logits.squeeze(-1)
        chosen, rejected = rewards[inputs["better"]], rewards[inputs["worse"]]
        weight = inputs["pair_weight"]
        loss = bradley_terry_loss(chosen, rejected, inputs["margin"] if self.use_margin else None, weight)
        if self.center_rewards_coefficient:
            loss = loss + self.center_rewards_coefficient * centering_penalty(chosen, rejected, weight)
        with torch.no_grad():
            self._pair_stats[0] += float((chosen > rejected).sum())
            self._pair_stats[1] += chosen.numel()
        return (loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}) if return_outputs else loss

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
