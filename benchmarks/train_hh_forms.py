"""Pointwise against pairwise on real human preferences: what thumbs alone teach, on the same held-out pairs.

    python benchmarks/train_hh_forms.py --data ../shared/data/hh_harmless_train.jsonl [--runs pairs,thumbs]

The HH file holds pairs only. The benchmark holds out 15% of them (seed 42, the split ``train`` makes) and
derives a thumbs set from the rest: for each training pair, a fair coin (seed 0) keeps either its chosen
reply as a thumbs up or its rejected reply as a thumbs down, one per prompt, never both. Each run trains
MiniLM with today's recipe (lr 1e-4, 1 epoch, max_length 256) and is scored on the same held-out pairs,
with the standard error of its accuracy. Results: benchmarks/results/train_hh_forms.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from rewardmodel import PreferenceExample
from rewardmodel.sources import load_examples
from training.config import TrainConfig, _packaged_minilm
from training.data import split_heldout
from training.run import train

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE: dict[str, Any] = {"learning_rate": 1e-4, "epochs": 1.0, "max_length": 256, "batch_size": 16,
                          "warmup_ratio": 0.1, "eval_batch_size": 64, "save_steps": 0, "logging_steps": 20,
                          "seed": 42}


def pair_rows(examples: list[PreferenceExample]) -> list[dict[str, Any]]:
    """Explicit pairs (HH transcripts are split already)."""
    return [{"prompt": e.prompt, "chosen": e.completions[0], "rejected": e.completions[1]} for e in examples]


def thumbs_rows(examples: list[PreferenceExample], seed: int = 0) -> list[dict[str, Any]]:
    """One thumb per prompt: the chosen reply up, or the rejected one down, by a fair coin."""
    coin = random.Random(seed)
    rows = []
    for e in examples:
        up = coin.random() < 0.5
        rows.append({"prompt": e.prompt, "completion": e.completions[0 if up else 1], "label": up})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="HH-style preference JSONL")
    parser.add_argument("--runs", default="pairs,thumbs", help="comma-separated: pairs, thumbs")
    args = parser.parse_args()
    train_pairs, heldout = split_heldout(load_examples(args.data), 0.15, RECIPE["seed"])
    forms = {"pairs": pair_rows(train_pairs), "thumbs": thumbs_rows(train_pairs)}
    out_json = RESULTS / "train_hh_forms.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    results |= {"machine": machine_info(), "recipe": RECIPE, "heldout_pairs": len(heldout)}
    with tempfile.TemporaryDirectory() as tmp:
        held_file = Path(tmp) / "heldout.jsonl"
        held_file.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(heldout)))
        for name in args.runs.split(","):
            data = Path(tmp) / f"{name}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in forms[name]))
            cfg = TrainConfig(model=_packaged_minilm(), train_data=str(data), eval_data=str(held_file),
                              output_dir=str(Path(tmp) / name), **RECIPE)
            started = time.perf_counter()
            result = train(cfg.validate(), progress=False)
            r = result.report
            assert r.accuracy is not None
            results["runs"][name] = {
                "train_records": len(forms[name]), "accuracy": r.accuracy,
                "stderr": math.sqrt(r.accuracy * (1 - r.accuracy) / r.pairs), "mean_margin": r.mean_margin,
                "model_prefers_longer": r.model_prefers_longer, "train_seconds": result.train_seconds,
                "wall_seconds": round(time.perf_counter() - started, 1), "steps": result.steps,
                "pointwise_bias": json.loads((Path(tmp) / name / "reward_model.json").read_text())["training"][
                    "pointwise"]["bias"],
            }
            RESULTS.mkdir(exist_ok=True)
            out_json.write_text(json.dumps(results, indent=2) + "\n")
            write_markdown(results)
            print(f"{name}: accuracy {r.accuracy:.4f} ± {results['runs'][name]['stderr']:.4f}", flush=True)


def write_markdown(results: dict[str, Any]) -> None:
    m = results["machine"]
    lines = [
        f"# Thumbs alone against pairs: MiniLM on HH harmless, {results['heldout_pairs']} held-out pairs",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; versions: {m['versions']}. Recipe: {results['recipe']}.",
        "Thumbs: one per training prompt (chosen up or rejected down by a fair coin), never both.",
        "",
        "| training data | records | held-out accuracy ± s.e. | mean margin | model prefers longer | learned b "
        "| train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        lines.append(f"| {name} | {run['train_records']} | {run['accuracy']:.3f} ± {run['stderr']:.3f} | "
                     f"{run['mean_margin']:.3f} | {run['model_prefers_longer']:.2f} | {run['pointwise_bias']:.3f} | "
                     f"{run['train_seconds']:.0f} |")
    (RESULTS / "train_hh_forms.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
