"""Served throughput and latency of a bundle under concurrent HTTP load, against offline scoring in the same run.

    python benchmarks/serve_load.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --data ../shared/data/hh_harmless_train.jsonl

For each ONNX variant: scores the pairs offline (onnxruntime, sorted batches of 32, the export
benchmark's method), then starts `rewardserve serve` as a real process and replays the same pairs as
concurrent HTTP requests (asyncio + httpx, keep-alive) in a few load shapes: many one-item requests
(a chat backend) and fewer multi-item requests (PPO workers). Reports pairs/s, served/offline ratio,
request latency percentiles, and the batch size and padding the server reports in /metrics. The load
generator shares the machine with the server, as a sidecar trainer would; its CPU cost is included.
Results: benchmarks/results/serve_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from processes import cpu_seconds, free_port, metric_sum, start_server

from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file
from rewardmodel.scoring import score_encoded
from rewardmodel.sources import load_examples

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = (("1 item x 32 concurrent", 1, 32), ("16 items x 4 concurrent", 16, 4), ("64 items x 2 concurrent", 64, 2))


def _pairs(data: str, count: int) -> list[tuple[Any, str]]:
    examples = load_examples(data, limit=count)
    return [(ex.prompt, c) for ex in examples for c in ex.completions][:count]


def offline_rate(bundle: Path, variant: str, pairs: list[tuple[Any, str]], threads: int) -> float:
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    scorer = onnx_scorer(open_session(variant_file(bundle, card, variant), threads=threads))
    encoded = formatter.encode_many(pairs)
    score_encoded(scorer, card.formatting, encoded[:64])  # warm-up
    started = time.perf_counter()
    score_encoded(scorer, card.formatting, encoded, batch_size=32)
    return len(pairs) / (time.perf_counter() - started)


async def _load(url: str, pairs: list[tuple[Any, str]], per_request: int, concurrency: int,
                server_pid: int) -> dict[str, float]:
    bodies = [{"items": [{"prompt": p, "completion": c} for p, c in pairs[i:i + per_request]]}
              for i in range(0, len(pairs), per_request)]
    latencies: list[float] = []
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=300,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        before = (await client.get("/metrics")).text

        async def worker() -> None:
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                r = await client.post("/score", json=body)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)

        started, cpu, server_cpu = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        client_cpu, server_cpu = time.process_time() - cpu, cpu_seconds(server_pid) - server_cpu
        after = (await client.get("/metrics")).text
    batches = metric_sum(after, "rewardserve_batch_size_items_count") - metric_sum(
        before, "rewardserve_batch_size_items_count")
    items = metric_sum(after, "rewardserve_batch_size_items_sum") - metric_sum(
        before, "rewardserve_batch_size_items_sum")
    padding = metric_sum(after, "rewardserve_batch_padding_ratio_sum") - metric_sum(
        before, "rewardserve_batch_padding_ratio_sum")
    ms = np.array(latencies) * 1000
    return {"pairs_per_s": len(pairs) / elapsed, "requests": len(bodies),
            "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "latency_ms_p99": float(np.percentile(ms, 99)),
            "mean_batch_items": items / max(batches, 1), "mean_batch_padding": padding / max(batches, 1),
            "wall_s": elapsed, "server_cpu_s": server_cpu, "load_generator_cpu_s": client_cpu}


def _serve(bundle: Path, variant: str, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    url = f"http://127.0.0.1:{free_port()}"
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--variant", variant,
                         "--port", url.rsplit(":", 1)[1], "--threads", str(threads), "--log-level", "warning"],
                        url + "/readyz")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--variants", default="fp32,int8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    pairs = _pairs(args.data, args.pairs)
    rows = []
    for variant in args.variants.split(","):
        offline = offline_rate(args.bundle, variant, pairs, args.threads)
        proc, url = _serve(args.bundle, variant, args.threads)
        try:
            asyncio.run(_load(url, pairs[:64], 8, 4, proc.pid))  # warm the server's paths
            for shape, per_request, concurrency in SHAPES:
                result = asyncio.run(_load(url, pairs, per_request, concurrency, proc.pid))
                rows.append({"variant": variant, "shape": shape, "offline_pairs_per_s": offline,
                             "served_over_offline": result["pairs_per_s"] / offline, **result})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    info = machine_info(("onnxruntime", "tokenizers", "fastapi", "uvicorn", "httpx", "numpy"))
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": "serve_load", "bundle": str(args.bundle), "data": args.data, "pairs": len(pairs),
           "threads": args.threads, "machine": info, "rows": rows}
    (RESULTS / "serve_load.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Served vs offline throughput ({info['cpu']}, {info['cores']} cores, {args.threads} threads)", "",
             f"{len(pairs)} (prompt, completion) pairs from `{Path(args.data).name}`; server and load generator on "
             "the same machine.", "",
             "| variant | load | served pairs/s | offline pairs/s | served/offline | p50 ms | p95 ms | p99 ms "
             "| mean batch | padding | server CPU s | load-gen CPU s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['shape']} | {r['pairs_per_s']:.1f} | {r['offline_pairs_per_s']:.1f} | "
                     f"{r['served_over_offline']:.2f} | {r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | "
                     f"{r['latency_ms_p99']:.0f} | {r['mean_batch_items']:.1f} | {r['mean_batch_padding']:.1%} | "
                     f"{r['server_cpu_s']:.1f} | {r['load_generator_cpu_s']:.1f} | {r['wall_s']:.1f} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())]
    (RESULTS / "serve_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
