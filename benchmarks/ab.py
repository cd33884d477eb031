"""Before/after of a change to the serving path, alternated: rounds of A, B, A, B, … on the same pairs.

A 2-core machine drifts by ±10–15% from one minute to the next, so one measurement of each tree (what
``performance.py --baseline-tree`` gives) can show a change that is not there. This script starts the
served demo bundle from this checkout and from ``--baseline-tree`` in turn, runs profiles (a) (4
clients × 256 pairs) and (c) (64 clients × 1 pair, where per-request code weighs most) in each round,
and reports each tree's median and spread, and the ratio of the medians::

    python benchmarks/ab.py --data ../shared/data/hh_harmless_train.jsonl --baseline-tree /tmp/before --rounds 4

Results: ``benchmarks/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import Api, closed_loop
from machine import machine_info
from performance import RESULTS, Server, bench_bundle, start
from processes import stop_server
from serve_load import _pairs

PROFILES = {"a": (256, 4, 1024), "c": (1, 64, 512)}
"""profile → (pairs per request, clients, pairs sent)."""


def server(bundle: Path, variant: str, threads: int, tree: Path | None) -> Server:
    """rewardserve serving ``bundle`` from ``tree`` (this checkout when None)."""
    return Server(f"{'before' if tree else 'after'}", Api("rewardserve"),
                  [sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--variant", variant,
                   "--threads", str(threads), "--log-level", "warning", "--port", "{port}",
                   "--request-timeout-s", "900"], "/readyz",
                  cwd=tree, env={"PYTHONPATH": str(tree)} if tree else {})


def one_round(which: Server, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """pairs/s of each profile against a freshly started ``which``."""
    proc, url = start(which)
    try:
        closed_loop(url, proc.pid, which.api, pairs[:64], 8, 4)  # warm its paths
        out = {}
        for name, (per_request, clients, count) in PROFILES.items():
            out[name] = closed_loop(url, proc.pid, which.api, pairs[:count], per_request, clients).summary()[
                "pairs_per_s"]
        return out
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="preference data with realistic lengths (HH harmless)")
    parser.add_argument("--baseline-tree", type=Path, required=True, help="a checkout of the code before the change")
    parser.add_argument("--bundle", type=Path, default=Path("~/.cache/rewardserve/demo-minilm").expanduser())
    parser.add_argument("--work", type=Path, default=Path("~/.cache/rewardserve/bench").expanduser())
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--name", default="ab")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = bench_bundle(args.bundle.expanduser(), args.work)
    pairs = _pairs(args.data, max(count for *_, count in PROFILES.values()))
    trees = {"after": server(bundle, args.variant, args.threads, None),
             "before": server(bundle, args.variant, args.threads, args.baseline_tree)}
    runs: dict[str, list[dict[str, float]]] = {"after": [], "before": []}
    for k in range(args.rounds):
        for name in (("before", "after") if k % 2 else ("after", "before")):  # alternate who goes first
            runs[name].append(one_round(trees[name], pairs))
            print(name, json.dumps(runs[name][-1]), flush=True)
    summary: dict[str, Any] = {}
    for profile in PROFILES:
        figures = {name: [r[profile] for r in rounds] for name, rounds in runs.items()}
        medians = {name: statistics.median(v) for name, v in figures.items()}
        summary[profile] = {"after": figures["after"], "before": figures["before"], "median_after": medians["after"],
                            "median_before": medians["before"], "ratio": medians["after"] / medians["before"]}
    described = {p: f"{n} clients x {r} pairs, {c} pairs" for p, (r, n, c) in PROFILES.items()}
    result = {"benchmark": "ab", "variant": args.variant, "rounds": args.rounds,
              "baseline_tree": str(args.baseline_tree), "profiles": described, "summary": summary,
              "machine": machine_info(("onnxruntime", "fastapi", "uvicorn", "starlette"))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Before/after, alternated ({args.rounds} rounds, demo {args.variant}, pairs/s)", "",
             "| profile | before: median (runs) | after: median (runs) | after / before |", "|---|---|---|---|"]
    for profile, s in summary.items():
        runs_b = ", ".join(f"{v:.1f}" for v in s["before"])
        runs_a = ", ".join(f"{v:.1f}" for v in s["after"])
        lines.append(f"| {result['profiles'][profile]} | {s['median_before']:.1f} ({runs_b}) | "
                     f"{s['median_after']:.1f} ({runs_a}) | {s['ratio']:.2f} |")
    machine = result["machine"]
    lines += ["", f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
              f"versions: {json.dumps(machine['versions'])}"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
