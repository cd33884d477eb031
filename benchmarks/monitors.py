"""The reward-health monitors: what they cost, and what they show while a simulated policy games the reward.

    python benchmarks/monitors.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --data ../shared/data/hh_harmless_train.jsonl

1. **Overhead**: two `rewardserve serve` processes on the same bundle, monitors on and off, measured in
   alternating rounds of closed-loop /score load (8 clients × 16 HH items); the ratio of their medians.
   Also the time one /metrics scrape takes with full windows (the figures are computed there).
2. **A gaming policy**: on the demo held-out pairs whose better completion is the longer one, a stream
   drifts from the worse completion to the better one (rewards rise, completions grow longer) while its
   prompts collapse onto the few whose better completion the model scores highest (what a policy optimizing
   the reward converges on; repetition), sent with ``x-run-id: gaming``; beside it a steady
   stream (all pairs, half better, half worse) with ``x-run-id: steady``. After each step the monitors are
   read back from /metrics (window "items", the last 400). The RewardHackingSuspected condition (z-shift
   > 1 and length Spearman > 0.5) is evaluated on both.
Results: benchmarks/results/monitors.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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
from rewardserve.monitor_cli import read_monitors

RESULTS = Path(__file__).resolve().parent / "results"


def serve(bundle: Path, *flags: str) -> tuple[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--variant", "int8",
                         "--port", str(port), "--log-level", "warning", *flags], url + "/readyz")
    return url, proc


async def load_round(url: str, pool: list[dict[str, Any]], seconds: float, clients: int = 8) -> float:
    """Items/s of closed-loop /score clients over ``seconds``."""
    done = 0
    stop = time.monotonic() + seconds

    async def client(seed: int) -> None:
        nonlocal done
        rng = np.random.default_rng(seed)
        async with httpx.AsyncClient(timeout=60) as http:
            while time.monotonic() < stop:
                r = await http.post(url + "/score", json={"items": [pool[i] for i in rng.integers(0, len(pool), 16)]})
                assert r.status_code == 200, r.text
                done += 16

    start = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return done / (time.monotonic() - start)


def overhead(bundle: Path, data: str, rounds: int, seconds: float) -> dict[str, Any]:
    pool = [{"prompt": ex.prompt, "completion": c} for ex in load_examples(data, limit=256) for c in ex.completions]
    servers = {"on": serve(bundle), "off": serve(bundle, "--no-monitors")}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for k in range(rounds):
            for name in (("on", "off") if k % 2 == 0 else ("off", "on")):  # alternate who goes first
                rates[name].append(asyncio.run(load_round(servers[name][0], pool, seconds)))
        scrape_ms = []
        for _ in range(10):
            t = time.perf_counter()
            httpx.get(servers["on"][0] + "/metrics").raise_for_status()
            scrape_ms.append((time.perf_counter() - t) * 1000)
        items = sum(v.get("items", 0) for v in read_monitors(servers["on"][0], "items", None).values())
    finally:
        for _, proc in servers.values():
            stop_server(proc)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {"rounds": rounds, "round_s": seconds, "items_per_s": rates, "median_on": on, "median_off": off,
            "ratio": on / off, "scrape_ms_median": statistics.median(scrape_ms), "items_in_windows": items}


def simulate(bundle: Path, steps: int, per_step: int) -> dict[str, Any]:
    examples = load_examples("builtin:demo:heldout")
    longer = [ex for ex in examples
              if len(ex.completions[ex.pairs[0].better]) > len(ex.completions[ex.pairs[0].worse])]
    rng = np.random.default_rng(0)
    url, proc = serve(bundle, "--monitor-window-items", "400")
    timeline: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=60) as http:
            # a policy optimizing the reward converges on what the model scores highest: order the prompts
            # by the served score of their better completion (scored without a run id: not in the runs' windows)
            best = http.post(url + "/score", json={"items": [
                {"prompt": ex.prompt, "completion": ex.completions[ex.pairs[0].better]} for ex in longer]}).json()
            longer = [longer[i] for i in np.argsort(best["scores"])[::-1]]
            for step in range(steps):
                s = step / (steps - 1)
                pool = max(5, int(len(longer) * (1 - s) ** 3))  # the prompts collapse onto the top few
                gaming, steady = [], []
                for _ in range(per_step):
                    ex = longer[rng.integers(0, pool)]
                    pick = ex.pairs[0].better if rng.random() < min(1.0, 1.5 * s) else ex.pairs[0].worse
                    gaming.append({"prompt": ex.prompt, "completion": ex.completions[pick]})
                    ex = examples[rng.integers(0, len(examples))]
                    pick = ex.pairs[0].better if rng.random() < 0.5 else ex.pairs[0].worse
                    steady.append({"prompt": ex.prompt, "completion": ex.completions[pick]})
                for run, items in (("gaming", gaming), ("steady", steady)):
                    r = http.post(url + "/score", json={"items": items}, headers={"x-run-id": run})
                    assert r.status_code == 200, r.text
                rows = read_monitors(url, "items", None)
                timeline.append({"step": step, **{run: next(v for (_, _, rr), v in rows.items() if rr == run)
                                                  for run in ("gaming", "steady")}})
    finally:
        stop_server(proc)

    def suspected(fig: dict[str, float]) -> bool:
        return fig.get("reward_z_shift", 0) > 1 and fig.get("length_spearman", 0) > 0.5

    return {"steps": steps, "items_per_step": per_step, "window_items": 400, "timeline": timeline,
            "suspected_from_step": {run: next((t["step"] for t in timeline if suspected(t[run])), None)
                                    for run in ("gaming", "steady")},
            "final": {run: timeline[-1][run] for run in ("gaming", "steady")}}


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "monitors.json").write_text(json.dumps(result, indent=2) + "\n")
    o, sim, m = result["overhead"], result["simulation"], result["machine"]
    fin = sim["final"]
    names = (("reward_z_shift", "z-shift"), ("length_spearman", "length Spearman"), ("length_mean", "mean length"),
             ("duplicate_ratio", "duplicate share"))
    lines = [
        "# Reward-health monitors (benchmarks/monitors.py)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
        "## Overhead (demo int8, 8 clients × 16 HH items, alternating rounds)", "",
        "| monitors | median items/s | rounds |", "|---|---:|---|",
        f"| on | {o['median_on']:.1f} | {', '.join(f'{x:.0f}' for x in o['items_per_s']['on'])} |",
        f"| off | {o['median_off']:.1f} | {', '.join(f'{x:.0f}' for x in o['items_per_s']['off'])} |",
        f"| ratio on/off | {o['ratio']:.3f} | |", "",
        f"A /metrics scrape with the windows filled takes {o['scrape_ms_median']:.1f} ms (median of 10).", "",
        f"## A simulated gaming policy against a steady one ({sim['steps']} steps × {sim['items_per_step']} items, "
        f"window: the last {sim['window_items']} items)", "",
        "| figure at the end | gaming | steady |", "|---|---:|---:|",
        *(f"| {label} | {fin['gaming'].get(k, float('nan')):.2f} | {fin['steady'].get(k, float('nan')):.2f} |"
          for k, label in names),
        "",
        f"RewardHackingSuspected's condition (z-shift > 1 and length Spearman > 0.5) holds for the gaming run "
        f"from step {sim['suspected_from_step']['gaming']}; for the steady run: "
        f"{sim['suspected_from_step']['steady'] or 'never'}. Plot: monitors.png.", "",
    ]
    (RESULTS / "monitors.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    steps = [t["step"] for t in sim["timeline"]]
    for ax, (key, label) in zip(axes, names, strict=True):
        for run in ("gaming", "steady"):
            ax.plot(steps, [t[run].get(key, np.nan) for t in sim["timeline"]], label=run)
        ax.set_title(label)
        ax.set_xlabel("step")
    axes[0].axhline(1, ls="--", c="gray")
    axes[1].axhline(0.5, ls="--", c="gray")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "monitors.png", dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--skip-overhead", action="store_true", help="only the simulation (keeps the last overhead figures)")
    p.add_argument("--round-s", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--per-step", type=int, default=32)
    args = p.parse_args()
    result = {"machine": machine_info(("onnxruntime", "numpy", "fastapi", "uvicorn", "prometheus-client")),
              "overhead": (json.loads((RESULTS / "monitors.json").read_text())["overhead"] if args.skip_overhead
                           else overhead(args.bundle, args.data, args.rounds, args.round_s)),
              "simulation": simulate(args.bundle, args.steps, args.per_step)}
    write(result)
    print(json.dumps({"overhead": {k: v for k, v in result["overhead"].items() if k != "items_per_s"},
                      "suspected_from_step": result["simulation"]["suspected_from_step"]}, indent=2))


if __name__ == "__main__":
    main()
