"""The labeling queue against random choice with the real training: MiniLM fine-tuned end to end.

    python benchmarks/label_queue_finetune.py --data ../shared/data/hh_harmless_train.jsonl
        [--budget 300] [--seed-pairs 100] [--repeats 3]

The check behind ``label_queue.py``'s many cheap repeats, at one budget and a few repeats: the same held-out
split and pool, but every model is trained with ``rewardserve train``'s code (``training.run.train``), the
served model that sets the queue's priorities is a fine-tune on the seed pairs scoring the pool with its
checkpoint, and the oracle judges through a real :class:`feedback.queue.LabelQueue`. Results:
benchmarks/results/label_queue_finetune.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the repository first: this folder's feedback.py (a benchmark) would hide the feedback package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_queue import RESULTS, pair_of, queue_choice
from machine import machine_info

from rewardmodel import Formatter, PreferenceExample, load_tokenizer
from rewardmodel.scoring import score_examples
from rewardmodel.sources import load_examples
from rewardmodel.torch_model import load_torch_model, torch_scorer
from service.collect import uncertainty
from training.config import TrainConfig, _packaged_minilm
from training.data import split_heldout
from training.run import train


def write_pairs(examples: list[PreferenceExample], pairs: list[tuple[str, str]], path: Path) -> Path:
    """HH-style records of (chosen, rejected) pairs, with their prompts."""
    prompt = {c: e.prompt for e in examples for c in e.completions}
    path.write_text("".join(json.dumps({"prompt": prompt[a], "chosen": a, "rejected": b}) + "\n" for a, b in pairs))
    return path


def finetune(train_file: Path, heldout_file: Path, out: Path, seed: int) -> float:
    """Held-out accuracy of MiniLM fine-tuned on ``train_file`` (the bundle is left in ``out``)."""
    cfg = TrainConfig(model=_packaged_minilm(), train_data=str(train_file), eval_data=str(heldout_file),
                      output_dir=str(out), overwrite=True, max_length=128, learning_rate=1e-4, epochs=2.0,
                      batch_size=16, warmup_ratio=0.1, save_steps=0, seed=seed, eval_batch_size=64)
    accuracy = train(cfg, progress=False).report.accuracy
    assert accuracy is not None  # pairs were held out
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="HH-style preference JSONL")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seed-pairs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    examples = [e for e in load_examples(args.data) if len(e.pairs) == 1]
    pool, heldout = split_heldout(examples, 0.15, 42)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        held = write_pairs(examples, [pair_of(e) for e in heldout], tmp / "heldout.jsonl")
        for r in range(args.repeats):
            rng = random.Random(7000 + r)
            chosen = rng.sample(range(len(pool)), args.budget)
            acc_random = finetune(write_pairs(examples, [pair_of(pool[i]) for i in chosen], tmp / "random.jsonl"),
                                  held, tmp / "random", r)
            seed_idx = rng.sample(range(len(pool)), args.seed_pairs)
            seed_pairs = [pair_of(pool[i]) for i in seed_idx]
            acc_seed = finetune(write_pairs(examples, seed_pairs, tmp / "seed.jsonl"), held, tmp / "seed", r)
            model, card = load_torch_model(tmp / "seed")
            scores, _, _ = score_examples(torch_scorer(model), Formatter(load_tokenizer(tmp / "seed"), card.formatting),
                                          pool, 64)
            del model
            by_item = {tuple(e.completions): uncertainty(s) for e, s in zip(pool, scores, strict=True)}
            labeled = queue_choice(pool, seed_idx, lambda c, by_item=by_item: by_item[tuple(c)],  # type: ignore[misc]
                                   args.budget - args.seed_pairs, tmp / f"fb-{r}.db")
            acc_queue = finetune(write_pairs(examples, seed_pairs + labeled, tmp / "queue.jsonl"), held,
                                 tmp / "queue", r)
            runs.append({"random": acc_random, "queue": acc_queue, "seed_model": acc_seed})
            print(f"repeat {r}: seed model {acc_seed:.3f}, random {acc_random:.3f}, queue {acc_queue:.3f}", flush=True)
    gains = [x["queue"] - x["random"] for x in runs]
    res = {"machine": machine_info(), "data": Path(args.data).name, "pool": len(pool), "heldout": len(heldout),
           "budget": args.budget, "seed_pairs": args.seed_pairs, "repeats": args.repeats,
           "training": "MiniLM, max_length 128, lr 1e-4, 2 epochs, batch 16", "runs": runs,
           "random_mean": mean(x["random"] for x in runs), "queue_mean": mean(x["queue"] for x in runs),
           "gain_mean": mean(gains), "wall_seconds": round(time.perf_counter() - started, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "label_queue_finetune.json").write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    lines = ["# The labeling queue against random choice, fine-tuning MiniLM (HH harmless)", "",
             f"{args.budget} pairs labeled per model (the queue's: {args.seed_pairs} random seed pairs, then the "
             f"queue's choice by the seed model's margins); {res['training']}; held-out {len(heldout)} pairs. "
             f"Wall {res['wall_seconds']:.0f} s.", "", f"Machine: {m['cpu']}, {m['cores']} cores; versions: "
             f"{m['versions']}", "", "| repeat | seed model | random | queue | queue − random |",
             "|---|---|---|---|---|"]
    lines += [f"| {i} | {x['seed_model']:.3f} | {x['random']:.3f} | {x['queue']:.3f} | "
              f"{x['queue'] - x['random']:+.3f} |" for i, x in enumerate(runs)]
    lines += [f"| mean | | {res['random_mean']:.3f} | {res['queue_mean']:.3f} | {res['gain_mean']:+.3f} |", "",
              "Reproduce: `python benchmarks/label_queue_finetune.py --data "
              "../shared/data/hh_harmless_train.jsonl`", ""]
    (RESULTS / "label_queue_finetune.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
