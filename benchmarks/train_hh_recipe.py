"""What lifts today's recipe on real human pairs: seeds, their ensemble, the learning-rate schedule.

    python benchmarks/train_hh_recipe.py --data ../shared/data/hh_harmless_train.jsonl [--runs seed-1,seed-2,cosine]

Every run trains MiniLM on the same 85% of HH harmless and is scored on the same 15% held-out pairs
(seed 42, the split ``train`` makes; ``train_hh_forms.py``'s ``pairs`` run is the baseline: seed 42,
linear decay). Each run's held-out scores are kept, so seeds can be ensembled by averaging their rewards.
Accuracy comes with its standard error; differences between two runs on the same pairs are judged by
how many pairs they order differently. Results: benchmarks/results/train_hh_recipe.{json,md}.

Not run, and why: swap augmentation (the loss scores each reply on its own row, so presenting a pair as
(rejected, chosen) with the label flipped is the same loss: nothing to learn), mean pooling (the served
bundle is a stock sequence classifier reading its pooler; another head would leave the format
contract), a stronger backbone (MiniLM is the only checkpoint shipped in a package for offline use here).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from train_hh_forms import RECIPE, pair_rows

from rewardmodel import Formatter, PreferenceExample, load_tokenizer
from rewardmodel.scoring import score_examples
from rewardmodel.sources import load_examples
from rewardmodel.torch_model import load_torch_model, torch_scorer
from training.config import TrainConfig, _packaged_minilm
from training.data import split_heldout
from training.run import train

RESULTS = Path(__file__).resolve().parent / "results"
RUNS: dict[str, dict[str, Any]] = {
    "seed-1": {"seed": 1},
    "seed-2": {"seed": 2},
    "cosine": {"lr_scheduler": "cosine"},
    "length-384": {"max_length": 384},
}


def heldout_margins(bundle: Path, heldout: list[PreferenceExample]) -> list[float]:
    """r(chosen) − r(rejected) of each held-out pair, from the saved bundle."""
    model, card = load_torch_model(bundle)
    scores, _, _ = score_examples(torch_scorer(model), Formatter(load_tokenizer(bundle), card.formatting), heldout,
                                  batch_size=64)
    return [s[0] - s[1] for s in scores]


def summary(margins: list[float]) -> dict[str, float]:
    """Accuracy (ties wrong) and its standard error."""
    m = np.asarray(margins)
    accuracy = float((m > 0).mean())
    return {"accuracy": accuracy, "stderr": math.sqrt(accuracy * (1 - accuracy) / len(m))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="HH-style preference JSONL")
    parser.add_argument("--runs", default="seed-1,seed-2,cosine", help=f"comma-separated from {sorted(RUNS)}")
    args = parser.parse_args()
    train_pairs, heldout = split_heldout(load_examples(args.data), 0.15, RECIPE["seed"])
    out_json = RESULTS / "train_hh_recipe.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    results |= {"machine": machine_info(), "recipe": RECIPE, "heldout_pairs": len(heldout)}
    with tempfile.TemporaryDirectory() as tmp:
        data, held = Path(tmp) / "train.jsonl", Path(tmp) / "heldout.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(train_pairs)))
        held.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(heldout)))
        for name in args.runs.split(","):
            settings = {**RECIPE, **RUNS[name]}
            out = Path(tmp) / name
            started = time.perf_counter()
            result = train(TrainConfig(model=_packaged_minilm(), train_data=str(data), eval_data=str(held),
                                       output_dir=str(out), **settings).validate(), progress=False)
            margins = heldout_margins(out, heldout)
            results["runs"][name] = {"settings": RUNS[name], **summary(margins), "margins": margins,
                                     "heldout_truncated_inputs": result.eval_truncated,
                                     "train_seconds": result.train_seconds,
                                     "wall_seconds": round(time.perf_counter() - started, 1)}
            RESULTS.mkdir(exist_ok=True)
            write_markdown(results)  # first: it adds the seeds' ensemble to the results
            out_json.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{name}: {summary(margins)}", flush=True)


def write_markdown(results: dict[str, Any]) -> None:
    runs = results["runs"]
    m = results["machine"]
    lines = [f"# Recipe study: MiniLM on HH harmless, {results['heldout_pairs']} held-out pairs", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; versions: {m['versions']}. Base recipe: {results['recipe']}.",
             "", "| run | change | held-out accuracy ± s.e. | truncated held-out inputs | train s |",
             "|---|---|---|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['settings']} | {run['accuracy']:.3f} ± {run['stderr']:.3f} | "
                     f"{run['heldout_truncated_inputs']} | {run['train_seconds']:.0f} |")
    seeds = [runs[n]["margins"] for n in runs if n.startswith("seed-")]
    if len(seeds) > 1:
        ensemble = summary(list(np.mean(np.asarray(seeds), axis=0)))
        lines.append(f"| ensemble of {len(seeds)} seeds | mean reward | {ensemble['accuracy']:.3f} ± "
                     f"{ensemble['stderr']:.3f} | | |")
        results["ensemble"] = ensemble
    (RESULTS / "train_hh_recipe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
