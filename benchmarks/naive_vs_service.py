"""Profile (c) of the performance benchmark — 64 concurrent clients, one pair per request — against the naive server and
rewardserve's backends, in one run on the same pairs.

    python benchmarks/naive_vs_service.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --data ../shared/data/hh_harmless_train.jsonl

Results: benchmarks/results/naive_vs_service.{json,md}. The naive server is benchmarks/naive_server.py
(FastAPI + transformers per request); rewardserve runs as `rewardserve serve` with its defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from processes import start_server
from serve_load import RESULTS, _load, _pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    pairs = _pairs(args.data, args.pairs)
    threads = str(os.cpu_count() or 1)
    port = 8790
    servers = {
        "naive (FastAPI + transformers per request)": [sys.executable, str(Path(__file__).parent / "naive_server.py"),
                                                       "--model", str(args.bundle), "--port", str(port)],
        **{f"rewardserve {backend} {variant}": [sys.executable, "-m", "rewardserve", "serve", "--model",
                                                 str(args.bundle), "--backend", backend, "--variant", variant,
                                                 "--port", str(port), "--threads", threads, "--log-level", "warning"]
           for backend, variant in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))},
    }
    rows: list[dict[str, Any]] = []
    for name, command in servers.items():
        url = f"http://127.0.0.1:{port}"
        proc = start_server(command, url + ("/health" if "naive" in name else "/readyz"))
        try:
            asyncio.run(_load(url, pairs[:64], 1, 8, proc.pid))  # warm-up
            result = asyncio.run(_load(url, pairs, 1, args.clients, proc.pid))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        rows.append({"server": name, **result})
        print(json.dumps(rows[-1]), flush=True)
    naive = rows[0]["pairs_per_s"]
    info = machine_info(("torch", "onnxruntime", "fastapi", "uvicorn"))
    (RESULTS / "naive_vs_service.json").write_text(json.dumps(
        {"benchmark": "naive_vs_service", "profile": f"{args.clients} concurrent clients, 1 pair per request",
         "pairs": len(pairs), "machine": info, "rows": rows}, indent=2) + "\n")
    lines = [f"# Profile (c): {args.clients} clients x 1 pair ({info['cpu']}, {info['cores']} cores)", "",
             "| server | pairs/s | x naive | p50 ms | p99 ms | mean batch | server CPU s | load-gen CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / naive:.2f} | "
                     f"{r['latency_ms_p50']:.0f} | {r['latency_ms_p99']:.0f} | {r['mean_batch_items']:.1f} | "
                     f"{r['server_cpu_s']:.1f} | {r['load_generator_cpu_s']:.1f} |")
    lines += ["", "The load generator (asyncio + httpx, 64 connections) shares the 2 cores with the server; its "
              "CPU column shows how much of the machine it took."]
    (RESULTS / "naive_vs_service.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
