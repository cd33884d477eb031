"""Packed against padded batches on this machine's CPU, in process (what ``--pack auto`` leaves off on CPUs).

    python3 benchmarks/packing.py

A 6-layer Llama-shaped decoder (hidden 512) and a MiniLM-L6-shaped BERT, random weights, imported as a user's
checkpoint would be; RL-shaped requests of 64 items of 64-512 tokens. The items are sorted by length and cut as
the server cuts them: padded under ``max_batch_padding`` 0.1, packed by real tokens; each packed kernel present is
timed beside the padded forward (:func:`gpu.in_process`, the GPU benchmark's ceiling step). Results:
``benchmarks/results/packing-cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu import DRY, Counter, in_process, work_for
from gpu_models import MINILM_L6, ModelSpec, build, sentences, words
from machine import machine_info

from rewardmodel.importer import import_model

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = (ModelSpec("llama-512x6", "llama", {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 6,
                                             "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 8000,
                                             "max_position_embeddings": 1024}),
          ModelSpec("minilm-l6", "bert", MINILM_L6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="RL requests of 64 items (half are timed)")
    args = parser.parse_args()
    profile = replace(DRY, rl_tokens=(64, 512), per_request=64, max_batch_tokens=16384)
    record: dict[str, Any] = {"machine": machine_info(), "command": "python3 benchmarks/packing.py", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in MODELS:
            plain, bundle = Path(tmp) / spec.name, Path(tmp) / f"{spec.name}-bundle"
            facts = build(spec, plain, sentences(words(), 3000), "cpu", "float32")
            import_model(str(plain), bundle)
            work = work_for(plain, profile, chunks=args.requests)
            record["models"][spec.name] = in_process(bundle, work, Counter(bundle, facts), profile, {})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "packing-cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    lines = ["# Packed against padded batches on a CPU, in process", "",
             f"`{record['command']}` on {m['cpu']} ({m['cores']} cores), torch {m['versions'].get('torch')}. "
             "RL-shaped items of 64-512 tokens; padded batches cut under max_batch_padding 0.1, packed ones by "
             "real tokens.", "", "| model | batches | items/s | tokens/s | × padded | max abs diff vs padded |",
             "|---|---|---|---|---|---|"]
    for name, rows in record["models"].items():
        padded = rows["padded"]["items_per_s"]
        for kind, row in rows.items():
            if isinstance(row, dict) and "items_per_s" in row:
                diff = row.get("max_diff_vs_padded")
                lines.append(f"| {name} {kind} | {row['batches']} | {row['items_per_s']:.1f} | "
                             f"{row['tokens_per_s']:,.0f} | {row['items_per_s'] / padded:.2f} | "
                             f"{'' if diff is None else f'{diff:.1e}'} |")
    (RESULTS / "packing-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
