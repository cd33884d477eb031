"""Offline scoring throughput on this CPU: torch fp32 vs ONNX fp32 vs ONNX int8, against the matmul peak.

    python benchmarks/offline_throughput.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --data ../shared/data/hh_harmless_train.jsonl

Scores the same (prompt, completion) pairs from real preference data with each engine in one run,
batched the same way (sorted by length, fixed batch size), and reports pairs/s, tokens/s, padding and
achieved GFLOP/s next to an fp32 matmul peak measured in the same run. Exports the bundle first if it
has no ONNX variants. Results: benchmarks/results/offline_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from export.run import ExportSettings, export_bundle
from rewardmodel import EncodedInput, Formatter, PaddedBatch, load_tokenizer, pad_batch, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session
from rewardmodel.sources import load_examples
from rewardmodel.torch_model import load_torch_model, torch_scorer
from rewardmodel.variants import ONNX_VARIANTS

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_peak_gflops(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Best fp32 GEMM rate of torch on this CPU with ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def forward_flops(config: Any, batch: PaddedBatch) -> float:
    """FLOPs of one encoder forward over the padded batch (linear layers + attention), as computed."""
    rows, length = batch.input_ids.shape
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = 2 * rows * length * (4 * h * h + 2 * h * ffn)
    attention = 2 * 2 * rows * length * length * h
    return layers * (linear + attention) + 2 * rows * (h * h + h)  # + pooler and score head


def run_engine(score: Callable[[PaddedBatch], np.ndarray], batches: list[PaddedBatch], repeats: int) -> list[float]:
    """Wall seconds of each timed pass over all batches (after one warm-up pass)."""
    for b in batches:
        score(b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in batches:
            score(b)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="an encoder bundle (the demo MiniLM bundle)")
    parser.add_argument("--data", required=True, help="preference data with realistic lengths")
    parser.add_argument("--pairs", type=int, default=256, help="preference pairs (x2 scored items)")
    parser.add_argument("--max-length", type=int, default=256, help="token cap per item for the benchmark")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    bundle = Path(args.bundle).expanduser()
    card = read_card(bundle)
    if not {"fp32", "int8"} <= set(card.onnx):
        card = export_bundle(bundle, ExportSettings(variants=("fp32", "int8")))
    # the demo card caps inputs at 96 tokens; the benchmark measures realistic lengths (MiniLM takes 512)
    spec = replace(card.formatting, max_length=args.max_length)
    formatter = Formatter(load_tokenizer(bundle), spec)
    examples = load_examples(args.data, limit=args.pairs)
    encoded: list[EncodedInput] = formatter.encode_many([(ex.prompt, c) for ex in examples for c in ex.completions])
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    batches = [pad_batch([encoded[i] for i in order[s:s + args.batch_size]], spec)
               for s in range(0, len(order), args.batch_size)]
    real_tokens = sum(len(e.input_ids) for e in encoded)
    padded_tokens = sum(b.input_ids.size for b in batches)

    peak = matmul_peak_gflops(args.threads)
    model, _ = load_torch_model(bundle)
    flops = sum(forward_flops(model.config, b) for b in batches)
    engines: dict[str, Callable[[PaddedBatch], np.ndarray]] = {"torch fp32": torch_scorer(model)}
    for variant in ("fp32", "int8"):
        path = bundle / ONNX_VARIANTS[variant].file
        engines[f"onnx {variant}"] = onnx_scorer(open_session(path, threads=args.threads))
    rows: dict[str, dict[str, float]] = {}
    for name, score in engines.items():
        torch.set_num_threads(args.threads)
        seconds = statistics.median(run_engine(score, batches, args.repeats))
        rows[name] = {
            "seconds": round(seconds, 3),
            "pairs_per_s": round(len(encoded) / seconds, 1),
            "tokens_per_s": round(real_tokens / seconds, 0),
            "gflops": round(flops / seconds / 1e9, 1),
            "fraction_of_matmul_peak": round(flops / seconds / 1e9 / peak, 3),
        }
        print(name, rows[name], flush=True)
    base = rows["torch fp32"]["pairs_per_s"]
    for row in rows.values():
        row["speedup_vs_torch"] = round(row["pairs_per_s"] / base, 2)
    result = {
        "machine": machine_info(("torch", "transformers", "onnxruntime", "onnx", "tokenizers", "numpy")),
        "bundle": card.name, "data": args.data, "items": len(encoded), "max_length": args.max_length,
        "mean_tokens_per_item": round(real_tokens / len(encoded), 1), "batch_size": args.batch_size,
        "threads": args.threads, "padding_ratio": round(1 - real_tokens / padded_tokens, 3),
        "matmul_peak_gflops": round(peak, 1), "gflop_per_pass": round(flops / 1e9, 1),
        "note": "'pairs' are scored (prompt, completion) items; GFLOP/s counts the padded work each engine does "
                "(int8 does the same arithmetic in int8, so its fraction of the fp32 peak can exceed what fp32 can)",
        "engines": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "offline_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        f"# Offline throughput: {card.name}, {len(encoded)} HH items (mean {result['mean_tokens_per_item']} "
        f"tokens, cap {args.max_length}), batches of {args.batch_size} sorted by length "
        f"(padding {result['padding_ratio']:.1%})",
        "",
        f"Machine: {m['cpu']}, {args.threads} threads; fp32 matmul peak {peak:.1f} GFLOP/s (torch, same run); "
        f"versions {m['versions']}",
        "",
        "| engine | pairs/s | tokens/s | GFLOP/s | of matmul peak | vs torch |",
        "|---|---|---|---|---|---|",
        *(f"| {n} | {r['pairs_per_s']} | {r['tokens_per_s']:.0f} | {r['gflops']} | "
          f"{r['fraction_of_matmul_peak']:.0%} | {r['speedup_vs_torch']}x |" for n, r in rows.items()),
    ]
    (RESULTS / "offline_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
