"""``rewardserve train``: data → model → Trainer → held-out report → bundle."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from rewardmodel import CARD_NAME, BundleCard, DataError, Normalization, PairwiseReport, write_card
from rewardmodel.sources import load_examples
from training.collator import RewardCollator, encode_examples
from training.config import TrainConfig
from training.data import criteria_of, split_heldout
from training.evaluation import evaluate_model
from training.modeling import LoadedModel, hide_progress_bars, load_base_model, save_bundle_weights
from training.trainer import RewardTrainer, detach_bias

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    output_dir: str
    report: PairwiseReport
    train_seconds: float
    steps: int
    train_examples: int
    eval_examples: int
    eval_truncated: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI prints it)."""
        return asdict(self)


def is_main_process() -> bool:
    """Whether this is rank 0 of torchrun / accelerate launch, or a run alone: the one that writes."""
    return int(os.environ.get("RANK", "0")) == 0


def _prepare_output(cfg: TrainConfig) -> tuple[Path, str | None]:
    out = Path(cfg.output_dir)
    resume: str | None = None
    if cfg.resume == "auto":
        resume = get_last_checkpoint(str(out / CHECKPOINTS)) if (out / CHECKPOINTS).is_dir() else None
        if resume is None:
            log.warning("--resume auto: no checkpoint under %s, starting from scratch", out / CHECKPOINTS)
    elif cfg.resume:
        resume = cfg.resume
    if not is_main_process():  # rank 0 alone checks and clears the directory, and later writes the bundle
        return out, resume
    if out.exists() and any(out.iterdir()) and resume is None:
        if not cfg.overwrite:
            raise DataError(str(out), "output directory is not empty; pass --overwrite to replace it, "
                                      "or --resume auto to continue from its last checkpoint")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, resume


def _bf16(cfg: TrainConfig) -> bool:
    if cfg.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "true"


def _wrap_lora(loaded: LoadedModel, cfg: TrainConfig) -> None:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules="all-linear")
    loaded.model = get_peft_model(loaded.model, lora)


def _renamed_args(cfg: TrainConfig) -> dict[str, Any]:
    """Arguments transformers 5 renamed, under the name the installed version has (pyproject allows 4.56+):
    warm-up as a ratio is ``warmup_steps`` < 1 in 5 (``warmup_ratio`` before), gradient checkpointing is
    ``activation_checkpointing`` in 5.x (the old name warns)."""
    fields = TrainingArguments.__dataclass_fields__
    ratio_in_steps = "float" in str(fields["warmup_steps"].type) or "warmup_ratio" not in fields
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {"warmup_steps" if ratio_in_steps else "warmup_ratio": cfg.warmup_ratio,
            checkpointing: cfg.gradient_checkpointing}


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a reward model as ``cfg`` says and write its bundle to ``cfg.output_dir``."""
    import datasets

    if not progress:
        hide_progress_bars()
    set_seed(cfg.seed)
    out, resume = _prepare_output(cfg)
    examples = load_examples(cfg.train_data, cfg.data_split, cfg.limit)
    if cfg.eval_data:
        heldout = load_examples(cfg.eval_data, cfg.data_split)
    else:
        examples, heldout = split_heldout(examples, cfg.eval_fraction, cfg.seed)
    criteria = criteria_of(examples, cfg.criteria_weights)
    loaded = load_base_model(cfg.model, cfg.architecture, cfg.max_length, cfg.padding_side, cfg.trust_remote_code,
                             num_labels=len(criteria.names) if criteria else 1)
    formatter = loaded.formatter
    if cfg.lora_r:
        _wrap_lora(loaded, cfg)
    features = datasets.Dataset.from_list(encode_examples(formatter, examples, criteria.names if criteria else ()))
    log.info("train: %d examples (%d truncated inputs); held-out: %d", len(examples),
             sum(features["truncated"]), len(heldout))

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        report, _ = evaluate_model(model, formatter, heldout, cfg.eval_batch_size, progress, criteria)
        found = {"accuracy": report.accuracy, "mean_margin": report.mean_margin}
        if report.pointwise:
            found |= {"spearman": report.pointwise.spearman, "auc": report.pointwise.auc}
        return {k: v for k, v in found.items() if v is not None}

    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps or None,
        seed=cfg.seed,
        bf16=_bf16(cfg),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without an accelerator only warns
        # without it, accelerate sees no device to spread over and torchrun's CPU processes each train
        # alone on all the data (transformers only warns); with it they are one gloo DDP run
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        **_renamed_args(cfg),
    )
    trainer = RewardTrainer(
        model=loaded.model, args=args, train_dataset=features, data_collator=RewardCollator(formatter),
        use_margin=cfg.use_margin, center_rewards_coefficient=cfg.center_rewards_coefficient,
        pointwise_weight=cfg.pointwise_weight, pointwise_bias=cfg.fixed_pointwise_bias(), eval_fn=eval_fn,
        criteria_weights=criteria.weight_vector() if criteria else None,
    )
    started = time.perf_counter()
    state = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    learned_bias = detach_bias(loaded.model)
    pointwise = {"weight": cfg.pointwise_weight, "learned": learned_bias is not None,
                 "bias": learned_bias if learned_bias is not None else cfg.fixed_pointwise_bias(),
                 "labels": sum(len(e.points) for e in examples)}
    if cfg.lora_r:
        loaded.model = loaded.model.merge_and_unload()
    loaded.model.eval()
    report, truncated = evaluate_model(loaded.model, formatter, heldout, cfg.eval_batch_size, progress, criteria)
    result = TrainResult(str(out), report, round(seconds, 1), state.global_step, len(examples), len(heldout),
                         truncated)
    if not is_main_process():
        return result
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    save_bundle_weights(loaded, out)
    card = BundleCard(
        name=cfg.name or out.resolve().name,
        base_model=cfg.model,
        architecture=loaded.architecture,
        model_type=loaded.model.config.model_type,
        formatting=formatter.spec,
        normalization=Normalization(report.reward_mean, max(report.reward_std, 1e-6),
                                    reference=cfg.eval_data or f"{cfg.train_data} (held-out split)",
                                    count=sum(len(e.completions) for e in heldout)),
        criteria=criteria,
        training={
            "config": asdict(cfg),
            "result": {k: v for k, v in result.to_dict().items() if k != "output_dir"},
            "pointwise": pointwise,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()},
        },
    )
    write_card(out, card)
    log.info("wrote bundle %s (%s)", out, CARD_NAME)
    return result
