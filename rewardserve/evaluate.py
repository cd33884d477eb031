"""Evaluating a bundle on preference data, with torch or one of its ONNX variants: what ``rewardserve eval`` prints,
and what the demo and the tests call. It composes two stages (training's torch evaluation, export's ONNX one), so
it lives in the command package, outside both."""

from __future__ import annotations

from typing import Any


def evaluate_bundle(model_dir: str, data: str, split: str = "train", limit: int = 0, batch_size: int = 32,
                    device: str = "cpu", progress: bool = True, variant: str = "torch",
                    trust_remote_code: bool = False) -> dict[str, Any]:
    """Evaluate a bundle (torch checkpoint or ONNX variant) on preference data: what `rewardserve eval` prints."""
    from rewardmodel import read_card
    from rewardmodel.sources import load_examples

    examples = load_examples(data, split, limit)
    if variant == "torch":
        from training.evaluation import evaluate_model
        from training.modeling import hide_progress_bars, load_bundle

        if not progress:
            hide_progress_bars()

        loaded, card = load_bundle(model_dir, device=device, trust_remote_code=trust_remote_code)
        report, truncated = evaluate_model(loaded.model, loaded.formatter, examples, batch_size, progress,
                                           layout=card.layout)
    else:
        from export.evaluate import evaluate_variant
        from rewardmodel.onnx_model import CPU, CUDA

        card = read_card(model_dir)
        providers = (CUDA, CPU) if device.startswith("cuda") else (CPU,)
        report, truncated = evaluate_variant(model_dir, variant, examples, batch_size, providers, card=card)
    return {"model": card.name, "variant": variant, "data": data, "examples": len(examples),
            "truncated_inputs": truncated, **report.to_dict()}
