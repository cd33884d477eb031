"""Feedback ingestion and its cost to scoring, on real servers and real databases::

    python benchmarks/feedback_store.py --data ../shared/data/hh_harmless_train.jsonl

1. events/s into SQLite and into PostgreSQL (a cluster of its own on 127.0.0.1, from Debian's
   ``postgresql``), with 1-event and 100-event requests from 8 concurrent clients, and the p50/p99
   latency of a request;
2. scoring throughput (8 clients × 16 pairs of HH text against the served demo int8 model) alone, with
   feedback flat out alongside (2 clients posting 100-event batches into SQLite back to back), and with a
   busy product's feedback (~100 events/s), rotated over rounds in one run: the median of each and the
   ratio to scoring alone.

Events are HH preference pairs as choices with the scores a reward model gave, so each row carries
realistic text. Results: ``benchmarks/results/feedback.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the PostgreSQL cluster helper of the tests

from load import Api, closed_loop
from machine import machine_info
from performance import RESULTS, Server, bench_bundle, start
from processes import stop_server
from serve_load import _pairs

from rewardmodel.sources import load_examples
from tests.postgres import Cluster, postgres_bin

CLIENTS = 8
_ids = itertools.count()


def events_of(data: str, count: int) -> list[dict[str, Any]]:
    """HH pairs as choice events (new ids on every call, so nothing is a duplicate)."""
    examples = load_examples(data, limit=count)
    return [{"prompt": ex.prompt, "completions": list(ex.completions), "choice": 0, "scores": [1.0, -1.0],
             "reward_model": "bench", "source": "bench", "annotator": f"a{i % 7}"} for i, ex in enumerate(examples)]


def server(bundle: Path, db: str, threads: int) -> Server:
    """rewardserve serving ``bundle`` and taking feedback into ``db``."""
    return Server("rewardserve", Api("rewardserve"),
                  [sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--variant", "int8",
                   "--threads", str(threads), "--log-level", "warning", "--port", "{port}", "--feedback-db", db],
                  "/readyz")


async def _ingest(url: str, pool: list[dict[str, Any]], per_request: int, seconds: float,
                  clients: int, stop: threading.Event | None = None, gap_s: float = 0.0) -> dict[str, float]:
    """Post ``per_request`` events per request from ``clients`` workers for ``seconds`` (or until ``stop``),
    each worker pausing ``gap_s`` between requests (0: back to back)."""
    latencies: list[float] = []
    stored = 0

    async def worker(session: aiohttp.ClientSession, deadline: float) -> None:
        nonlocal stored
        while time.perf_counter() < deadline and not (stop and stop.is_set()):
            batch = [{**pool[(n := next(_ids)) % len(pool)], "id": f"bench-{n}"} for _ in range(per_request)]
            t = time.perf_counter()
            async with session.post("/feedback", json={"events": batch}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"/feedback answered {r.status}: {body}")
            latencies.append(time.perf_counter() - t)
            stored += body["accepted"]
            if gap_s:
                await asyncio.sleep(gap_s)

    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, started + seconds) for _ in range(clients)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"events_per_s": stored / wall, "requests": len(ms), "latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p99": float(np.percentile(ms, 99)), "wall_s": wall}


def ingestion(bundle: Path, db: str, pool: list[dict[str, Any]], seconds: float, threads: int) -> dict[str, Any]:
    """Events/s and latency with 1-event and 100-event requests into ``db``."""
    proc, url = start(server(bundle, db, threads))
    try:
        asyncio.run(_ingest(url, pool, 10, 1.0, 2))  # warm the pool and the schema
        return {f"{n}-event requests": asyncio.run(_ingest(url, pool, n, seconds, CLIENTS)) for n in (1, 100)}
    finally:
        stop_server(proc)


FEEDS = {"with feedback flat out": (100, 2, 0.0), "with feedback at ~100 events/s": (10, 1, 0.1)}
"""Feedback traffic beside the scoring load: (events per request, clients, pause between requests)."""


def _feed(url: str, pool: list[dict[str, Any]], feed: tuple[int, int, float], stop: threading.Event,
          out: list[dict[str, float]]) -> None:
    per_request, clients, gap = feed
    out.append(asyncio.run(_ingest(url, pool, per_request, 600, clients, stop, gap)))


def scoring_alongside(bundle: Path, db: str, pool: list[dict[str, Any]], pairs: list[tuple[str, str]],
                      rounds: int, threads: int) -> dict[str, Any]:
    """Scoring pairs/s alone and with feedback traffic, alternated rounds on one server."""
    proc, url = start(server(bundle, db, threads))
    api = Api("rewardserve")
    names = ["alone", *FEEDS]
    runs: dict[str, list[float]] = {name: [] for name in names}
    fed: dict[str, list[float]] = {name: [] for name in FEEDS}
    try:
        closed_loop(url, proc.pid, api, pairs[:64], 8, 4)  # warm up
        for k in range(rounds):
            for name in names[k % len(names):] + names[:k % len(names)]:  # rotate who goes first
                stop = threading.Event()
                out: list[dict[str, float]] = []
                feeder = threading.Thread(target=_feed, args=(url, pool, FEEDS.get(name, (0, 0, 0.0)), stop, out))
                if name in FEEDS:
                    feeder.start()
                    time.sleep(0.5)
                runs[name].append(closed_loop(url, proc.pid, api, pairs, 16, CLIENTS).summary()["pairs_per_s"])
                if feeder.is_alive():
                    stop.set()
                    feeder.join()
                    fed[name].append(out[0]["events_per_s"])
                print(name, f"{runs[name][-1]:.1f} pairs/s", flush=True)
    finally:
        stop_server(proc)
    medians = {name: statistics.median(v) for name, v in runs.items()}
    return {"rounds": runs, "median_pairs_per_s": medians,
            "ratio_over_alone": {name: medians[name] / medians["alone"] for name in FEEDS},
            "feedback_events_per_s_alongside": {name: statistics.median(v) for name, v in fed.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="preference data with realistic text (HH harmless)")
    parser.add_argument("--bundle", type=Path, default=Path("~/.cache/rewardserve/demo-minilm").expanduser())
    parser.add_argument("--work", type=Path, default=Path("~/.cache/rewardserve/bench").expanduser())
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each ingestion run")
    parser.add_argument("--rounds", type=int, default=4, help="scoring rounds of each kind")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = bench_bundle(args.bundle.expanduser(), args.work)
    pool = events_of(args.data, 2000)
    pairs = _pairs(args.data, 1024)
    bindir = postgres_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed: apt-get install postgresql")
    results: dict[str, Any] = {"machine": machine_info(("sqlalchemy", "psycopg", "fastapi", "onnxruntime")),
                               "clients": CLIENTS, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = ingestion(bundle, str(Path(tmp) / "ingest.db"), pool, args.seconds, args.threads)
        print("sqlite", json.dumps(results["sqlite"]), flush=True)
        cluster = Cluster(bindir)
        try:
            cluster.start()
            results["postgresql"] = ingestion(bundle, cluster.create_database("bench"), pool, args.seconds,
                                              args.threads)
            print("postgresql", json.dumps(results["postgresql"]), flush=True)
        finally:
            cluster.remove()
        results["scoring"] = scoring_alongside(bundle, str(Path(tmp) / "alongside.db"), pool, pairs, args.rounds,
                                               args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feedback.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "feedback.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict[str, Any]) -> str:
    """The short table of the results."""
    m = r["machine"]
    lines = ["# Feedback ingestion and its cost to scoring", "",
             f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores; versions: "
             + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()), "",
             f"{r['clients']} clients posting for {r['seconds']:g} s each; PostgreSQL on 127.0.0.1 with fsync off "
             "(the benchmark measures the service, not this machine's disk); SQLite with synchronous=FULL.", "",
             "| database | request | events/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for db in ("sqlite", "postgresql"):
        for kind, s in r[db].items():
            lines.append(f"| {db} | {kind} | {s['events_per_s']:.0f} | {s['latency_ms_p50']:.1f} | "
                         f"{s['latency_ms_p99']:.1f} |")
    s = r["scoring"]
    lines += ["", "| scoring (8 clients × 16 pairs) | median pairs/s | ÷ alone | feedback events/s beside it |",
              "|---|---|---|---|"]
    for name, v in s["median_pairs_per_s"].items():
        ratio = s["ratio_over_alone"].get(name, 1.0)
        events = s["feedback_events_per_s_alongside"].get(name)
        lines.append(f"| {name} | {v:.1f} | {ratio:.2f} | {'' if events is None else f'{events:.0f}'} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
