"""Train the MiniLM backbone on real human preferences (HH harmless) under a few settings.

    python benchmarks/train_hh.py --data ../shared/data/hh_harmless_train.jsonl [--runs A,B]

Each run holds out the same 15% split (seed 42), trains, and records held-out pairwise accuracy, mean
margin, length bias and wall time. Results: benchmarks/results/train_hh.json and train_hh.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from training.config import TrainConfig, _packaged_minilm
from training.run import train

RUNS: dict[str, dict[str, object]] = {
    "A": {"learning_rate": 3e-5, "epochs": 2.0, "max_length": 256},
    "B": {"learning_rate": 3e-5, "epochs": 2.0, "max_length": 128},
    "C": {"learning_rate": 1e-4, "epochs": 1.0, "max_length": 256},
    "D": {"learning_rate": 1e-4, "epochs": 2.0, "max_length": 256, "center_rewards_coefficient": 0.01},
}

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="HH-style preference JSONL")
    parser.add_argument("--runs", default="A,B,C,D", help=f"comma-separated run names from {sorted(RUNS)}")
    args = parser.parse_args()
    out_json = RESULTS / "train_hh.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {"runs": {}}
    results["machine"] = machine_info()
    for name in args.runs.split(","):
        settings = RUNS[name]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(model=_packaged_minilm(), train_data=args.data, output_dir=tmp, overwrite=True,
                              eval_fraction=0.15, batch_size=16, warmup_ratio=0.1, save_steps=0, seed=42,
                              logging_steps=20, eval_batch_size=64, **settings)  # type: ignore[arg-type]
            started = time.perf_counter()
            result = train(cfg, progress=False)
            wall = time.perf_counter() - started
        r = result.report
        results["runs"][name] = {
            "settings": settings, "train_examples": result.train_examples, "heldout_examples": result.eval_examples,
            "train_seconds": result.train_seconds, "wall_seconds": round(wall, 1), "steps": result.steps,
            "heldout_truncated_inputs": result.eval_truncated, "report": r.to_dict(),
        }
        RESULTS.mkdir(exist_ok=True)
        out_json.write_text(json.dumps(results, indent=2) + "\n")
        write_markdown(results)
        print(f"run {name}: accuracy {r.accuracy:.4f} margin {r.mean_margin:.3f} wall {wall:.0f}s", flush=True)


def write_markdown(results: dict) -> None:
    m = results["machine"]
    lines = [
        "# MiniLM reward model on HH harmless (1,800 real pairs, 15% held out)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; versions: {m['versions']}",
        "",
        "| run | lr | epochs | max_length | centering | held-out acc | mean margin | score~length spearman "
        "| model/data prefer longer | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in sorted(results["runs"].items()):
        s, r = run["settings"], run["report"]
        lines.append(
            f"| {name} | {s['learning_rate']} | {s['epochs']} | {s['max_length']} | "
            f"{s.get('center_rewards_coefficient', 0)} | {r['accuracy']:.3f} | {r['mean_margin']:.3f} | "
            f"{r['length_spearman']:.3f} | {r['model_prefers_longer']:.2f} / {r['data_prefers_longer']:.2f} | "
            f"{run['train_seconds']:.0f} |"
        )
    (RESULTS / "train_hh.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
