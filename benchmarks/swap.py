"""Throughput during a hot swap against steady state, in one run, on a real `rewardserve serve`.

    python benchmarks/swap.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --other ~/.cache/rewardserve/demo-minilm-seed2 --data ../shared/data/hh_harmless_train.jsonl

Closed-loop clients post /score (8 HH items each) throughout. The run alternates steady windows with
swaps (PUT /admin/models/rm, switching between the two bundles). Each swap's window runs from the PUT to
its answer (the new version loaded and warmed beside the old one, the switch, the old one drained and
released); throughput and latency in those windows are compared with the steady windows of the same run.
Every answer must be 200 and carry one of the two versions. Results: benchmarks/results/swap.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from processes import free_port, start_server, stop_server

from rewardmodel.sources import load_examples

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_KEY = "bench-admin"


def items(data: str, n: int = 512) -> list[dict[str, Any]]:
    """HH (prompt, completion) items, as /score takes them."""
    out = []
    for ex in load_examples(data, limit=n // 2):
        out += [{"prompt": ex.prompt, "completion": c} for c in ex.completions]
    return out[:n]


async def client(url: str, pool: list[dict[str, Any]], stop: asyncio.Event, log: list[tuple[float, float, int, str]],
                 seed: int) -> None:
    """Post 8-item requests until ``stop``; log (sent, received, status, version) of each."""
    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(timeout=120) as http:
        while not stop.is_set():
            body = {"items": [pool[i] for i in rng.integers(0, len(pool), 8)]}
            sent = time.monotonic()
            r = await http.post(url + "/score", json=body)
            log.append((sent, time.monotonic(), r.status_code, r.headers.get("x-model-version", "")))


def window(log: list[tuple[float, float, int, str]], start: float, end: float) -> dict[str, float]:
    """Items/s and latency of the requests answered in [start, end)."""
    done = [(s, r) for s, r, _, _ in log if start <= r < end]
    lat = np.asarray([r - s for s, r in done]) if done else np.zeros(1)
    return {"seconds": end - start, "requests": len(done), "items_per_s": 8 * len(done) / (end - start),
            "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000)}


async def run(bundles: tuple[Path, Path], data: str, clients: int, steady_s: float, swaps: int,
              variant: str) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", f"rm={bundles[0]}", "--variant",
                         variant, "--port", str(port), "--log-level", "warning"], url + "/readyz",
                        env={"REWARDSERVE_ADMIN_KEYS": ADMIN_KEY})
    pool = items(data)
    log: list[tuple[float, float, int, str]] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client(url, pool, stop, log, i)) for i in range(clients)]
    steady, during, swap_s = [], [], []
    try:
        async with httpx.AsyncClient(timeout=300) as admin:
            await asyncio.sleep(2)  # let the clients reach steady state
            for k in range(swaps):
                start = time.monotonic()
                await asyncio.sleep(steady_s)
                steady.append(window(log, start, time.monotonic()))
                start = time.monotonic()
                r = await admin.put(url + "/admin/models/rm", json={"path": str(bundles[(k + 1) % 2])},
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"})
                end = time.monotonic()
                assert r.status_code == 200, r.text
                swap_s.append(end - start)
                during.append(window(log, start, end))
            start = time.monotonic()
            await asyncio.sleep(steady_s)
            steady.append(window(log, start, time.monotonic()))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        stop_server(proc)
    statuses: dict[int, int] = {}
    for _, _, status, _ in log:
        statuses[status] = statuses.get(status, 0) + 1
    versions = {v for _, _, _, v in log}
    steady_rate = float(np.mean([w["items_per_s"] for w in steady]))
    swap_rate = float(np.mean([w["items_per_s"] for w in during]))
    return {
        "machine": machine_info(("onnxruntime", "numpy", "fastapi", "uvicorn")),
        "setup": {"bundles": [str(b) for b in bundles], "variant": variant, "clients": clients,
                  "items_per_request": 8, "steady_window_s": steady_s, "swaps": swaps},
        "requests": len(log), "statuses": statuses, "versions_seen": len(versions),
        "steady": steady, "during_swap": during, "swap_seconds": swap_s,
        "summary": {"steady_items_per_s": steady_rate, "during_swap_items_per_s": swap_rate,
                    "ratio": swap_rate / steady_rate, "mean_swap_s": float(np.mean(swap_s)),
                    "steady_p99_ms": float(np.mean([w["p99_ms"] for w in steady])),
                    "during_swap_p99_ms": float(np.mean([w["p99_ms"] for w in during])),
                    "non_200": sum(n for s, n in statuses.items() if s != 200)},
    }


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "swap.json").write_text(json.dumps(result, indent=2) + "\n")
    s, m, setup = result["summary"], result["machine"], result["setup"]
    lines = [
        "# Throughput during a hot swap (benchmarks/swap.py)", "",
        f"{setup['clients']} closed-loop clients, /score of {setup['items_per_request']} HH items, "
        f"{setup['variant']} on onnxruntime; {setup['swaps']} swaps between two demo trainings, each between "
        f"steady windows of {setup['steady_window_s']:g} s. Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores.",
        "", "| | items/s | p99 latency (ms) |", "|---|---:|---:|",
        f"| steady | {s['steady_items_per_s']:.0f} | {s['steady_p99_ms']:.0f} |",
        f"| during a swap (PUT to answer, mean {s['mean_swap_s']:.1f} s) | {s['during_swap_items_per_s']:.0f} | "
        f"{s['during_swap_p99_ms']:.0f} |",
        f"| ratio | {s['ratio']:.2f} | |", "",
        f"{result['requests']} requests, {s['non_200']} not answered 200; {result['versions_seen']} versions seen.",
        "", f"{m['os']}, Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
    ]
    (RESULTS / "swap.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--other", type=Path, required=True, help="the bundle swapped in (then back, and so on)")
    p.add_argument("--data", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--steady-s", type=float, default=10.0)
    p.add_argument("--swaps", type=int, default=4)
    p.add_argument("--variant", default="int8")
    args = p.parse_args()
    result = asyncio.run(run((args.bundle, args.other), args.data, args.clients, args.steady_s, args.swaps,
                             args.variant))
    write(result)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
