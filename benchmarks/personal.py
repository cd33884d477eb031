"""Personal rewards on simulated users: does a user's own few judgements make a better reward for them, and from how
many? And what does a personal score cost a server, side by side with a plain one?

No public preference set carries users, so the users are simulated on real judgements, with preferences that differ
in known ways (after LoRe's and PAL's protocols):

* **demo**: the demo set's pairs each differ in one flaw, on one criterion (on-topic, complete, polite, correct).
  Every user weighs the criteria differently, ``v ~ N(μ, 1)`` with μ = (complete 0.5, correct 1, on_topic 1,
  polite 0.3): a good share of users do not mind a rude or cut-off reply, or prefer it. A user prefers the flawless
  reply with probability ``σ(3 · v[criterion])`` (label noise).
* **hh**: HH-RLHF harmless pairs (real human choices). Half the users prefer shorter replies, half longer; their
  utility difference is ``1 + t · log(len_chosen / len_rejected)`` with ``t = ±4`` (the human choice counts for 1),
  again through ``σ(3 · ·)``.

Protocol: the basis heads are fitted (:mod:`training.personalize`) on 40 *training* users' judgements (60 pairs
each); 40 *unseen* users each give n ∈ {5, 10, 20, 50} judgements, their weights are fitted as the server fits them
(:func:`rewardmodel.personal.fit_profile`), and they are scored on 40 held-out pairs of their own. Reported, per n:
the plain model (= the population weights the server gives a user without a profile), one weight vector fitted on
all training users pooled (what retraining on everyone's feedback without users would give), the personal weights,
and the oracle (the user's own noiseless utility: the ceiling the label noise leaves).

The serving phase starts `rewardserve serve` on the personalized demo bundle with a feedback store holding profiles,
and times `/score` of 8 items without and with a user, interleaved, in one run.

    python benchmarks/personal.py --hh-data ../shared/data/hh_harmless_train.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from machine import machine_info
from processes import free_port, start_server, stop_server

from rewardmodel import read_card
from rewardmodel.demo_data import CRITERION_OF_FLAW, demo_rows
from rewardmodel.personal import fit_profile, fit_weights
from rewardmodel.sources import load_examples
from training.personalize import RowReader, UserPairs, fit_basis

RESULTS = Path(__file__).resolve().parent / "results"
CRITERIA = ("complete", "correct", "on_topic", "polite")
MEANS = {"complete": 0.5, "correct": 1.0, "on_topic": 1.0, "polite": 0.3}
NOISE = 3.0
SHOTS = (5, 10, 20, 50)
TRAIN_USERS, TEST_USERS, TRAIN_PAIRS, HELD_OUT = 40, 40, 60, 40


@dataclass(frozen=True)
class Pool:
    """Judged pairs: the items' rows, and per pair its (first, second) item and each user-free feature."""

    rows: np.ndarray
    first: np.ndarray
    second: np.ndarray
    feature: list[Any]
    """What a simulated user's utility reads: the flaw's criterion (demo) or the log length ratio (hh)."""


def demo_pool(reader: RowReader, pairs: int, rng: random.Random) -> Pool:
    rows = [r for r in demo_rows("train") if r.get("kind") in CRITERION_OF_FLAW]
    rng.shuffle(rows)
    rows = rows[:pairs]
    items = [(r["prompt"], c) for r in rows for c in (r["chosen"], r["rejected"])]
    return Pool(reader.rows(items), np.arange(0, 2 * len(rows), 2), np.arange(1, 2 * len(rows), 2),
                [CRITERION_OF_FLAW[r["kind"]] for r in rows])


def hh_pool(reader: RowReader, data: str, pairs: int, rng: random.Random) -> Pool:
    examples = [ex for ex in load_examples(data) if ex.pairs]
    rng.shuffle(examples)
    examples = examples[:pairs]
    items, feature = [], []
    for ex in examples:
        better, worse = ex.completions[ex.pairs[0].better], ex.completions[ex.pairs[0].worse]
        items += [(ex.prompt, better), (ex.prompt, worse)]
        feature.append(math.log(max(len(better), 1) / max(len(worse), 1)))
    return Pool(reader.rows(items), np.arange(0, 2 * len(examples), 2), np.arange(1, 2 * len(examples), 2), feature)


def demo_user(rng: random.Random) -> dict[str, float]:
    return {c: rng.gauss(MEANS[c], 1.0) for c in CRITERIA}


def hh_user(rng: random.Random) -> float:
    return rng.choice((-4.0, 4.0))


def utility(kind: str, user: Any, feature: Any) -> float:
    """How much the user prefers the pair's first item over its second."""
    return float(user[feature]) if kind == "demo" else 1.0 + float(user) * float(feature)


def judge(kind: str, pool: Pool, user: Any, picks: list[int], rng: random.Random) -> tuple[list[int], list[int]]:
    """(better, worse) item indices of the user's noisy judgements of pairs ``picks``."""
    better, worse = [], []
    for p in picks:
        first = rng.random() < 1 / (1 + math.exp(-NOISE * utility(kind, user, pool.feature[p])))
        a, b = int(pool.first[p]), int(pool.second[p])
        better.append(a if first else b)
        worse.append(b if first else a)
    return better, worse


def simulate(kind: str, pool: Pool, k: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    make = demo_user if kind == "demo" else hh_user
    n_pairs = len(pool.feature)
    started = time.perf_counter()
    users, better, worse = [], [], []
    for u in range(TRAIN_USERS):
        b, w = judge(kind, pool, make(rng), rng.sample(range(n_pairs), TRAIN_PAIRS), rng)
        users += [u] * len(b)
        better += b
        worse += w
    train = UserPairs(tuple(str(u) for u in range(TRAIN_USERS)), np.asarray(users), np.asarray(better),
                      np.asarray(worse))
    # the bundle's own head is head 0; here the rows' reader gives it
    basis = fit_basis(pool.rows, train, HEAD[0], HEAD[1], k, seed=seed)
    fit_s = time.perf_counter() - started
    out = basis.outputs(pool.rows)
    pooled = fit_weights(out[train.better] - out[train.worse], basis.population, strength=1.0)
    table: dict[int, dict[str, list[float]]] = {n: {"plain": [], "pooled": [], "personal": [], "oracle": []}
                                                for n in SHOTS}
    fit_ms: list[float] = []
    for _ in range(TEST_USERS):
        user = make(rng)
        picks = rng.sample(range(n_pairs), max(SHOTS) + HELD_OUT)
        tb, tw = judge(kind, pool, user, picks[max(SHOTS):], rng)
        tb_, tw_ = np.asarray(tb), np.asarray(tw)
        truth = [utility(kind, user, pool.feature[p]) for p in picks[max(SHOTS):]]
        oracle = np.mean([(b == int(pool.first[p])) == (t > 0)
                          for b, p, t in zip(tb, picks[max(SHOTS):], truth, strict=True)])
        shots_b, shots_w = judge(kind, pool, user, picks[:max(SHOTS)], rng)
        for n in SHOTS:  # each n: the user's first n judgements
            fb, fw = shots_b[:n], shots_w[:n]
            t0 = time.perf_counter()
            profile = fit_profile(basis, "u", pool.rows[fb], pool.rows[fw])
            fit_ms.append((time.perf_counter() - t0) * 1000)
            mine = np.asarray(profile.weights)
            table[n]["plain"].append(float(np.mean(out[tb_, 0] > out[tw_, 0])))
            table[n]["pooled"].append(float(np.mean(out[tb_] @ pooled > out[tw_] @ pooled)))
            table[n]["personal"].append(float(np.mean(out[tb_] @ mine > out[tw_] @ mine)))
            table[n]["oracle"].append(float(oracle))
    return {"kind": kind, "k": k, "pool_pairs": n_pairs, "basis_fit_s": round(fit_s, 2),
            "user_fit_ms_median": statistics.median(fit_ms),
            "by_shots": {n: {m: round(float(np.mean(v)), 4) for m, v in cols.items()} | {
                "personal_sem": round(float(np.std(cols["personal"]) / math.sqrt(len(cols["personal"]))), 4)}
                for n, cols in table.items()}}


HEAD: tuple[np.ndarray, float] = (np.zeros(0), 0.0)


def serving(bundle: Path, requests: int) -> dict[str, Any]:
    """Plain and personal ``/score`` of 8 items, interleaved, on one server."""
    if any("rows" not in r for r in read_card(bundle).onnx.values()):  # exported before read rows existed
        from export.run import ExportSettings, export_bundle

        export_bundle(bundle, ExportSettings(variants=tuple(read_card(bundle).onnx)))
    work = Path(tempfile.mkdtemp(prefix="personal-bench-"))
    db = work / "feedback.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port", str(port),
                         "--log-level", "warning", "--feedback-db", str(db)], url + "/readyz", 600,
                        env={"REWARDSERVE_HOME": str(work / "home")}, log=RESULTS.parent / ".server.log")
    items = [{"prompt": f"How do I boil an egg? ({i})", "completion": "Put the egg in boiling water for nine minutes."}
             for i in range(8)]
    times: dict[str, list[float]] = {"plain": [], "personal": []}
    # alice's profile, fitted by the server from her judgements (she prefers the reply that is cut off)
    events = [{"id": f"alice-{i}", "prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]], "choice": 1,
               "metadata": {"user": "alice"}} for i, r in enumerate(demo_rows()[:20])]
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/feedback", json={"events": events}).raise_for_status()
            deadline = time.monotonic() + 120
            while client.post("/score", json={"items": items[:1], "user": "alice"}).json()["personal"][
                    "profile"] != "personal":
                assert time.monotonic() < deadline, "alice's profile was not fitted in 120 s"
                time.sleep(0.2)
            for _ in range(20):  # warm both paths
                client.post("/score", json={"items": items}).raise_for_status()
                client.post("/score", json={"items": items, "user": "alice"}).raise_for_status()
            for i in range(requests):
                for mode in (("plain", "personal") if i % 2 else ("personal", "plain")):
                    body = {"items": items} | ({"user": "alice"} if mode == "personal" else {})
                    t0 = time.perf_counter()
                    answer = client.post("/score", json=body)
                    times[mode].append((time.perf_counter() - t0) * 1000)
                    answer.raise_for_status()
                    assert (mode == "personal") == ("personal" in answer.json())
            about = client.get("/v1/models").json()["data"][0]["rewardserve"]
    finally:
        stop_server(proc)
        shutil.rmtree(work, ignore_errors=True)
    p50 = {m: statistics.median(v) for m, v in times.items()}
    return {"requests_each": requests, "profile_judgements": len(events), "items_per_request": 8,
            "engine": f"{about['backend']} {about['variant']}, {about['engine']['chosen']}",
            "p50_ms": p50, "mean_ms": {m: statistics.fmean(v) for m, v in times.items()},
            "personal_over_plain_p50": p50["personal"] / p50["plain"]}


def report(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "personal.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [f"# Personal rewards on simulated users ({m['cpu']}, {m['cores']} cores)", "",
             f"Bundle: `{result['bundle']}`, K = {result['k']}; versions: "
             f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}. Held-out pair accuracy of {TEST_USERS} "
             f"unseen users ({HELD_OUT} pairs each) against the judgements each gave; basis heads fitted on "
             f"{TRAIN_USERS} other users x {TRAIN_PAIRS} pairs.", ""]
    for sim in result["simulations"]:
        lines += [f"## {sim['kind']} ({sim['pool_pairs']} pairs; basis fit {sim['basis_fit_s']} s, a user's fit "
                  f"{sim['user_fit_ms_median']:.2f} ms median)", "",
                  "| judgements per user | plain (= population) | pooled | personal (± s.e.) | oracle |",
                  "|---|---|---|---|---|"]
        for n, row in sim["by_shots"].items():
            lines.append(f"| {n} | {row['plain']:.3f} | {row['pooled']:.3f} | {row['personal']:.3f} ± "
                         f"{row['personal_sem']:.3f} | {row['oracle']:.3f} |")
        lines.append("")
    if "serving" in result:
        s = result["serving"]
        lines += ["## Serving cost", "", f"`/score` of {s['items_per_request']} items, {s['requests_each']} requests "
                  f"each, interleaved on one server ({s['engine']}).", "",
                  "| | plain | personal | personal / plain |", "|---|---|---|---|",
                  f"| p50 ms | {s['p50_ms']['plain']:.2f} | {s['p50_ms']['personal']:.2f} | "
                  f"{s['personal_over_plain_p50']:.2f} |",
                  f"| mean ms | {s['mean_ms']['plain']:.2f} | {s['mean_ms']['personal']:.2f} | "
                  f"{s['mean_ms']['personal'] / s['mean_ms']['plain']:.2f} |", ""]
    (RESULTS / "personal.md").write_text("\n".join(lines))


def main() -> None:
    global HEAD
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=Path("~/.cache/rewardserve/demo-minilm").expanduser())
    parser.add_argument("--hh-data", help="HH-RLHF pairs (the shared data's hh_harmless_train.jsonl)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=1200, help="pairs in each pool")
    parser.add_argument("--requests", type=int, default=200, help="serving phase: requests of each kind")
    parser.add_argument("--phases", default="demo,hh,serving")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    phases = args.phases.split(",")
    reader = RowReader(args.bundle)
    HEAD = (reader.head, reader.bias)
    result: dict[str, Any] = {"benchmark": "personal", "bundle": str(args.bundle), "k": args.k,
                              "machine": machine_info(("torch", "transformers", "onnxruntime")), "simulations": []}
    rng = random.Random(args.seed)
    if "demo" in phases:
        result["simulations"].append(simulate("demo", demo_pool(reader, args.pairs, rng), args.k, args.seed))
        report(result)
    if "hh" in phases and args.hh_data:
        result["simulations"].append(simulate("hh", hh_pool(reader, args.hh_data, args.pairs, rng), args.k, args.seed))
        report(result)
    if "serving" in phases:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "bundle"
            shutil.copytree(args.bundle, bundle)
            from training.personalize import personalize_bundle

            data = Path(tmp) / "users.jsonl"
            data.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                                                "user": f"u{i % 20}"}) + "\n" for i, r in enumerate(demo_rows()[:400])))
            personalize_bundle(bundle, str(data), args.k, progress=False)
            result["serving"] = serving(bundle, args.requests)
        report(result)


if __name__ == "__main__":
    main()
