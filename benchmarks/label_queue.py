"""What the labeling queue is worth: pairs it chooses against pairs chosen at random, on real HH preferences.

    python benchmarks/label_queue.py --data ../shared/data/hh_harmless_train.jsonl [--budgets 100,200,400]
        [--repeats 20]

The human labels are held back. 15% of the pairs (seed 42, the training split) are the held-out set; the
rest are the pool. For each budget B and each repeat:

- **random**: B pool pairs drawn at random are "labeled" (their human label is revealed);
- **queue**: a random seed set (``--seed-pairs``) is labeled and a model trained on it plays the served
  model. Every other pool item goes into a real :class:`feedback.queue.LabelQueue` (a SQLite feedback store)
  with the priority ``--collect-for-labeling`` gives live traffic (:func:`service.collect.uncertainty`: the
  near ties first). A simulated annotator takes ``GET /label/next``'s task B − seed times and submits the
  held-back human choice; the store's training export (``sqlite:///…``) is read back like ``rewardserve
  train`` reads it.

Both then train the same reward model on what was labeled and are scored on the held-out pairs. The model is
a Bradley-Terry head on frozen MiniLM sentence features (mean-pooled, 128 tokens of the reply), which keeps
hundreds of retrainings within minutes on a CPU; a full fine-tune per point would take ~10 minutes each on
2 cores. Results: benchmarks/results/label_queue.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, stdev

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the repository first: this folder's feedback.py (a benchmark) would hide the feedback package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_info

from feedback.queue import LabelQueue, LabelTask
from feedback.store import FeedbackStore
from rewardmodel import PreferenceExample
from rewardmodel.sources import load_examples
from service.collect import uncertainty
from training.config import _packaged_minilm
from training.data import split_heldout

RESULTS = Path(__file__).resolve().parent / "results"
ORACLE = "oracle"
STRATEGIES = ("random", "queue", "queue-ensemble")
Priority = Callable[[list[str]], float]


def embed(texts: list[str], batch: int = 64) -> dict[str, np.ndarray]:
    """Mean-pooled, L2-normalized MiniLM features of each distinct text (its first 128 tokens)."""
    from transformers import AutoModel, AutoTokenizer

    path = _packaged_minilm()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    distinct = sorted(set(texts))
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for i in range(0, len(distinct), batch):
            chunk = distinct[i:i + batch]
            enc = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            out.update(zip(chunk, pooled.numpy(), strict=True))
    return out


def pair_of(e: PreferenceExample) -> tuple[str, str]:
    """(chosen, rejected) texts of a one-pair example."""
    p = e.pairs[0]
    return e.completions[p.better], e.completions[p.worse]


def fit(diffs: np.ndarray, l2: float) -> np.ndarray:
    """Bradley-Terry weights w minimizing mean −log σ(w·(f_chosen − f_rejected)) + l2·|w|²."""
    x = torch.as_tensor(diffs, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -torch.nn.functional.logsigmoid(x @ w).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def accuracy(w: np.ndarray, diffs: np.ndarray) -> float:
    """Share of pairs whose human-chosen reply scores higher."""
    return float(((diffs @ w) > 0).mean())


def queue_choice(pool: list[PreferenceExample], seed_idx: list[int], priority: Priority, n: int,
                 db: Path) -> list[tuple[str, str]]:
    """Queue every unlabeled pool item with ``priority`` (what the served model would give it live), let the
    oracle judge ``n`` tasks in the queue's order, and read the judgements back from the store: (chosen,
    rejected) texts."""
    store = FeedbackStore(str(db), pool_size=1)
    store.migrate()
    queue = LabelQueue(store, per_task=1)
    now = datetime.now(UTC)
    seeded = set(seed_idx)
    truth: dict[str, str] = {}
    tasks = []
    for i, e in enumerate(pool):
        if i in seeded:
            continue
        task = LabelTask(prompt=e.prompt, completions=list(e.completions), source="sim",
                         priority=priority(list(e.completions)))
        truth[task.id] = pair_of(e)[0]
        tasks.append(task)
    queue.add(tasks, now)
    for _ in range(n):
        got = queue.next(ORACLE)
        if got is None:
            break
        queue.submit(got["id"], ORACLE, {"choice": got["completions"].index(truth[got["id"]])}, now)
    store.close()
    return [pair_of(e) for e in load_examples(f"sqlite:///{db}")]


def margin_priority(w: np.ndarray, feats: dict[str, np.ndarray]) -> Priority:
    """One served model: minus the margin between the two best candidates (near ties first)."""
    return lambda completions: uncertainty([float(feats[c] @ w) for c in completions])


def ensemble_priority(members: list[np.ndarray], feats: dict[str, np.ndarray], texts: list[str]) -> Priority:
    """An ensemble served: each member's scores standardized over the pool (as a card's normalization does),
    and the members' mean disagreement (std) over the candidates, as the service computes it."""
    matrix = np.stack([feats[t] for t in texts])
    stats = [(float((matrix @ w).mean()), float((matrix @ w).std()) or 1.0) for w in members]

    def priority(completions: list[str]) -> float:
        z = np.array([[(float(feats[c] @ w) - mu) / sd for c in completions] for w, (mu, sd) in zip(members, stats,
                                                                                                     strict=True)])
        return uncertainty(list(z.mean(0)), list(z.std(0)))

    return priority


def run(args: argparse.Namespace) -> dict:
    examples = [e for e in load_examples(args.data) if len(e.pairs) == 1]
    pool, heldout = split_heldout(examples, 0.15, 42)
    started = time.perf_counter()
    feats = embed([c for e in examples for c in e.completions])
    embed_s = time.perf_counter() - started

    def diffs(pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.stack([feats[a] - feats[b] for a, b in pairs])

    held = diffs([pair_of(e) for e in heldout])
    w_full = fit(diffs([pair_of(e) for e in pool]), args.l2)
    full = accuracy(w_full, held)
    # how consistent the labeled pairs are with what the whole pool teaches: does the queue pick pairs
    # that are harder, or noisier, than random ones?
    budgets = [int(b) for b in args.budgets.split(",")]
    consistency: dict[str, dict[str, list[float]]] = {str(b): {k: [] for k in STRATEGIES} for b in budgets}
    texts = sorted({c for e in pool for c in e.completions})
    points: dict[str, dict[str, list[float]]] = {str(b): {k: [] for k in STRATEGIES} for b in budgets}
    for b in budgets:
        for r in range(args.repeats):
            rng = random.Random(1000 * b + r)
            got = points[str(b)]
            chosen = rng.sample(range(len(pool)), b)
            random_pairs = [pair_of(pool[i]) for i in chosen]
            got["random"].append(accuracy(fit(diffs(random_pairs), args.l2), held))
            consistency[str(b)]["random"].append(accuracy(w_full, diffs(random_pairs)))
            seed_idx = rng.sample(range(len(pool)), args.seed_pairs)
            seed_pairs = [pair_of(pool[i]) for i in seed_idx]
            members = [fit(diffs([seed_pairs[rng.randrange(len(seed_pairs))] for _ in seed_pairs]), args.l2)
                       for _ in range(args.members)]  # bootstrap resamples of the seed set
            for name, priority in (("queue", margin_priority(fit(diffs(seed_pairs), args.l2), feats)),
                                   ("queue-ensemble", ensemble_priority(members, feats, texts))):
                with tempfile.TemporaryDirectory() as tmp:
                    labeled = queue_choice(pool, seed_idx, priority, b - args.seed_pairs, Path(tmp) / "fb.db")
                if len(labeled) != b - args.seed_pairs:
                    raise RuntimeError(f"the queue gave {len(labeled)} judgements, wanted {b - args.seed_pairs}")
                got[name].append(accuracy(fit(diffs(seed_pairs + labeled), args.l2), held))
                consistency[str(b)][name].append(accuracy(w_full, diffs(labeled)))
            print(f"budget {b} repeat {r}: " + " ".join(f"{k} {got[k][-1]:.3f}" for k in STRATEGIES), flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    pts: dict[str, list[float]]
    for key, pts in points.items():
        summary[key] = {"random": {"mean": mean(pts["random"]), "std": stdev(pts["random"]),
                                   "consistency": mean(consistency[key]["random"])}}
        for name in STRATEGIES[1:]:
            gain = [q - x for q, x in zip(pts[name], pts["random"], strict=True)]
            summary[key][name] = {"mean": mean(pts[name]), "std": stdev(pts[name]), "gain_mean": mean(gain),
                                  "consistency": mean(consistency[key][name]),
                                "gain_se": stdev(gain) / len(gain) ** 0.5, "wins": sum(g > 0 for g in gain)}
    return {"machine": machine_info(), "data": Path(args.data).name, "pool": len(pool), "heldout": len(heldout),
            "seed_pairs": args.seed_pairs, "members": args.members, "repeats": args.repeats, "l2": args.l2,
            "embed_seconds": round(embed_s, 1),
            "wall_seconds": round(time.perf_counter() - started, 1), "full_pool_accuracy": full,
            "summary": summary, "points": points}


def write_markdown(res: dict, path: Path) -> None:
    m = res["machine"]
    lines = [
        "# The labeling queue against random choice (HH harmless, labels held back)",
        "",
        f"Pool {res['pool']} pairs, held out {res['heldout']}; {res['repeats']} repeats per budget; the queue's "
        f"served model is trained on {res['seed_pairs']} random seed pairs (counted in the budget); the ensemble has "
        f"{res['members']} members trained on bootstrap resamples of them. Held-out accuracy, mean ± std. Reward "
        f"model: Bradley-Terry head on frozen MiniLM features (l2 {res['l2']}). Trained on the whole pool: "
        f"{res['full_pool_accuracy']:.3f} held-out accuracy.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; versions: {m['versions']}",
        "",
        "| pairs labeled | random | queue (margin) | queue − random (± s.e.) | queue (ensemble) "
        "| ensemble − random (± s.e.) |",
        "|---|---|---|---|---|---|",
    ]
    for b, s in res["summary"].items():
        q, e, r = s["queue"], s["queue-ensemble"], s["random"]
        lines.append(f"| {b} | {r['mean']:.3f} ± {r['std']:.3f} | {q['mean']:.3f} ± {q['std']:.3f} | "
                     f"{q['gain_mean']:+.3f} ± {q['gain_se']:.3f} ({q['wins']}/{res['repeats']} better) | "
                     f"{e['mean']:.3f} ± {e['std']:.3f} | {e['gain_mean']:+.3f} ± {e['gain_se']:.3f} "
                     f"({e['wins']}/{res['repeats']} better) |")
    lines += ["", "Share of the labeled pairs (seed excluded) whose human label the model trained on the whole pool "
              "agrees with (how learnable the chosen pairs are):", "",
              "| pairs labeled | random | queue (margin) | queue (ensemble) |", "|---|---|---|---|"]
    for b, s in res["summary"].items():
        lines.append(f"| {b} | {s['random']['consistency']:.3f} | {s['queue']['consistency']:.3f} | "
                     f"{s['queue-ensemble']['consistency']:.3f} |")
    lines += ["", "Reproduce: `python benchmarks/label_queue.py --data ../shared/data/hh_harmless_train.jsonl`", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="HH-style preference JSONL")
    parser.add_argument("--budgets", default="100,200,400", help="pairs labeled, comma-separated")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed-pairs", type=int, default=50, help="random pairs that train the queue's model")
    parser.add_argument("--members", type=int, default=5, help="members of the served ensemble")
    parser.add_argument("--l2", type=float, default=1e-3, help="weight penalty of the reward head")
    args = parser.parse_args()
    res = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "label_queue.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(res, RESULTS / "label_queue.md")
    print((RESULTS / "label_queue.md").read_text())


if __name__ == "__main__":
    main()
