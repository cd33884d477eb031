"""The default engine: the default server (``--backend auto --variant auto``) against every engine's in-process
ceiling, and the overload probe, on the machine at hand, in one run.

    python benchmarks/auto_engine.py --data ../shared/data/hh_harmless_train.jsonl \\
        [--bundle ~/.cache/rewardserve/demo-minilm] [--phases engines,overload]

1. **engines**: every (backend, variant, streams) the bundle has, in process, with the service's batching at its
   best (all pairs sorted by length, cut under the limits; ``performance.engine_ceiling``): the ceilings. Then
   `rewardserve serve --model BUNDLE` with no engine flags and an empty ``REWARDSERVE_HOME``, so it times the
   engines at start and serves the one it found fastest, under two profiles: (a) 4 clients x 256-pair requests,
   (d) 32 clients x 8-item requests. The two best ceilings are measured again after the server, each keeping
   its better figure; the ratio is served pairs/s over the best ceiling.
2. **overload**: the probe that found admission by count wanting: 512 clients each posting 32-item requests back
   to back for 15 s against the default server (its 60 s deadline), every answer counted by status, and the
   clients left with no answer within 60 s.

Results: benchmarks/results/auto_engine.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import Api, Pair, closed_loop
from machine import machine_info
from offline_throughput import matmul_peak_gflops
from performance import engine_ceiling
from processes import free_port, start_server, stop_server
from serve_load import _pairs

from rewardmodel import read_card
from service.autoselect import candidates
from service.errors import ServiceError
from service.settings import ServiceSettings

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = {"a: 4 clients x 256 pairs": (256, 4), "d: 32 clients x 8 items": (8, 32)}
OVERLOAD_CLIENTS, OVERLOAD_ITEMS, OVERLOAD_S, ANSWER_WITHIN_S = 512, 32, 15.0, 60.0


def cpu_flags() -> str:
    """The vector extensions that decide which engine wins (what the issue's two machines differed in)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "flags unknown"
    have = set(flags.split(":", 1)[1].split())
    named = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in have]
    return " ".join(named) or "no AVX2"


def serve(bundle: Path, home: Path, *flags: str) -> tuple[Any, str]:
    """`rewardserve serve` on ``bundle`` with the default engine choice, its home in ``home``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port", str(port),
                         "--log-level", "warning", *flags], url + "/readyz", 600,
                        env={"REWARDSERVE_HOME": str(home)}, log=RESULTS.parent / ".server.log")
    return proc, url


def engines(bundle: Path, pairs: list[Pair], threads: int) -> dict[str, Any]:
    """The ceilings, then the default server under both profiles, then the two best ceilings again."""
    card = read_card(bundle)
    found, skipped = candidates(card, ServiceSettings(model=bundle, threads=threads))
    peak = matmul_peak_gflops(threads)
    ceilings, failed = [], []
    for c in found:
        for streams in sorted({1, c.streams}):
            try:
                row = engine_ceiling(bundle, c.variant, pairs, threads, peak, streams, backend_name=c.backend)
            except ServiceError as exc:  # e.g. OpenVINO has no rule for onnxruntime's fused int8 ops
                failed.append({"backend": c.backend, "variant": c.variant, "streams": streams,
                               "failed": exc.message.splitlines()[0]})
                break
            ceilings.append({"backend": c.backend, "variant": c.variant, "streams": streams,
                             "pairs_per_s": row["pairs_per_s"], "tokens_per_s": row["tokens_per_s"]})
            print("ceiling", json.dumps(ceilings[-1]), flush=True)
    served: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        proc, url = serve(bundle, Path(home))
        ready_s = time.perf_counter() - started
        try:
            about = httpx.get(url + "/v1/models").json()["data"][0]["rewardserve"]
            closed_loop(url, proc.pid, Api("rewardserve"), pairs[:64], 8, 4)  # warm the server's paths
            for profile, (per_request, clients) in PROFILES.items():
                outcome = closed_loop(url, proc.pid, Api("rewardserve"), pairs, per_request, clients).summary()
                served.append({"profile": profile, **outcome})
                print("served", json.dumps(served[-1]), flush=True)
        finally:
            stop_server(proc)
    # this machine drifts by 10-20 % over minutes: the fastest engines' ceilings are measured again after the
    # server, and each keeps its better figure, so the ratio is against the ceiling at its best
    for row in sorted(ceilings, key=lambda r: -r["pairs_per_s"])[:2]:
        again = engine_ceiling(bundle, row["variant"], pairs, threads, peak, row["streams"],
                               backend_name=row["backend"])
        row["pairs_per_s_after"] = again["pairs_per_s"]
        row["pairs_per_s"] = max(row["pairs_per_s"], again["pairs_per_s"])
        print("ceiling again", json.dumps(row), flush=True)
    best = max(ceilings, key=lambda r: r["pairs_per_s"])
    for row in served:
        row["ratio_to_best_ceiling"] = row["pairs_per_s"] / best["pairs_per_s"]
    return {"ceilings": ceilings, "best_ceiling": best, "not_timed": skipped + failed, "ready_s": ready_s,
            "chosen": {"backend": about["backend"], "variant": about["variant"], "streams": about["streams"],
                       "how": about["engine"]["chosen"], "table": about["engine"]["table"]},
            "served": served}


async def _overload(url: str, pairs: list[Pair]) -> dict[str, Any]:
    chunks = [pairs[i:i + OVERLOAD_ITEMS] for i in range(0, len(pairs) - OVERLOAD_ITEMS + 1, OVERLOAD_ITEMS)]
    codes: list[int] = []
    latencies: dict[int, list[float]] = {}
    stop = time.perf_counter() + OVERLOAD_S
    timeout = aiohttp.ClientTimeout(total=ANSWER_WITHIN_S)
    async with aiohttp.ClientSession(url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client(k: int) -> None:
            n = k
            while time.perf_counter() < stop:
                body = {"items": [{"prompt": p, "completion": c} for p, c in chunks[n % len(chunks)]]}
                n += OVERLOAD_CLIENTS
                started = time.perf_counter()
                try:
                    async with session.post("/score", json=body) as r:
                        await r.read()
                        status = r.status
                except TimeoutError:
                    status = -1  # no answer within ANSWER_WITHIN_S
                except aiohttp.ClientError:
                    status = -2
                codes.append(status)
                latencies.setdefault(status, []).append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(OVERLOAD_CLIENTS)))
        wall = time.perf_counter() - began
    counts = {str(s): codes.count(s) for s in sorted(set(codes))}
    return {"clients": OVERLOAD_CLIENTS, "items_per_request": OVERLOAD_ITEMS, "offered_s": OVERLOAD_S,
            "wall_s": wall, "answers": counts, "no_answer_within_60s": codes.count(-1),
            "only_200_and_429": set(codes) <= {200, 429},
            "served_items_per_s": codes.count(200) * OVERLOAD_ITEMS / wall,
            "latency_s_max": {s: max(v) for s, v in ((str(k), v) for k, v in latencies.items())}}


def overload(bundle: Path, pairs: list[Pair]) -> dict[str, Any]:
    """The probe against the default server (its engine remembered from the engines phase's home if any)."""
    with tempfile.TemporaryDirectory() as home:
        proc, url = serve(bundle, Path(home))
        try:
            about = httpx.get(url + "/v1/models").json()["data"][0]["rewardserve"]
            result = asyncio.run(_overload(url, pairs))
        finally:
            stop_server(proc)
    result["engine"] = f"{about['backend']} {about['variant']}, {about['streams']} stream(s)"
    print("overload", json.dumps(result), flush=True)
    return result


def report(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "auto_engine.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [f"# The default engine and admission by time ({m['cpu']}, {m['cores']} cores; {result['cpu_flags']})", "",
             f"Bundle: `{result['bundle']}`; pairs: {result['data']} ({result['pairs']} pairs); threads "
             f"{result['threads']}; versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", ""]
    if "engines" in result:
        e = result["engines"]
        c = e["chosen"]
        lines += ["## Engines in process (ceilings) and the default server", "",
                  "| engine | streams | pairs/s in process (the better of two runs for the two fastest) |",
                  "|---|---|---|"]
        lines += [f"| {r['backend']} {r['variant']} | {r['streams']} | {r['pairs_per_s']:.1f}"
                  + (f" (after the server: {r['pairs_per_s_after']:.1f})" if "pairs_per_s_after" in r else "") + " |"
                  for r in e["ceilings"]]
        lines += [f"| {r['backend']} {r['variant']} | {r['streams']} | not run: {r.get('failed') or r.get('skipped')} |"
                  for r in e["not_timed"]]
        lines += ["", f"The default server chose **{c['backend']} {c['variant']}, {c['streams']} stream(s)** "
                      f"({c['how']}; ready in {e['ready_s']:.1f} s including the timing).", "",
                  "| profile | served pairs/s | best ceiling pairs/s | ratio | p50 ms | p99 ms |",
                  "|---|---|---|---|---|---|"]
        best = e["best_ceiling"]
        lines += [f"| {s['profile']} | {s['pairs_per_s']:.1f} | {best['pairs_per_s']:.1f} ({best['backend']} "
                  f"{best['variant']}, {best['streams']}) | {s['ratio_to_best_ceiling']:.2f} | "
                  f"{s['latency_ms_p50']:.0f} | {s['latency_ms_p99']:.0f} |" for s in e["served"]]
        lines.append("")
    if "overload" in result:
        o = result["overload"]
        lines += ["## Overload probe", "",
                  f"{o['clients']} clients x {o['items_per_request']}-item `/score` requests, back to back for "
                  f"{o['offered_s']:.0f} s, default server ({o['engine']}, 60 s deadline).", "",
                  "| answers by status | no answer within 60 s | only 200/429 | served items/s | slowest answer by "
                  "status (s) |", "|---|---|---|---|---|",
                  f"| {o['answers']} | {o['no_answer_within_60s']} | {o['only_200_and_429']} | "
                  f"{o['served_items_per_s']:.1f} | {({k: round(v, 1) for k, v in o['latency_s_max'].items()})} |", ""]
    (RESULTS / "auto_engine.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="preference data (HH harmless: real lengths)")
    parser.add_argument("--bundle", type=Path, default=Path("~/.cache/rewardserve/demo-minilm").expanduser())
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--phases", default="engines,overload")
    args = parser.parse_args()
    pairs = _pairs(args.data, args.pairs)
    result: dict[str, Any] = {"benchmark": "auto_engine", "bundle": str(args.bundle), "data": args.data,
                              "pairs": len(pairs), "threads": args.threads,
                              "machine": machine_info(("onnxruntime", "openvino", "torch", "transformers")),
                              "cpu_flags": cpu_flags()}
    phases = args.phases.split(",")
    if "engines" in phases:
        result["engines"] = engines(args.bundle, pairs, args.threads)
        report(result)
    if "overload" in phases:
        result["overload"] = overload(args.bundle, pairs)
        report(result)


if __name__ == "__main__":
    main()
