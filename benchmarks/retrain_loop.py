"""The loop, simulated on real human judgements: HH-RLHF harmless pairs arrive as feedback in rounds, through
``/feedback`` on a real server with SQLite, and ``rewardserve retrain`` runs after each round.

Judgements: each round is ``--items`` HH pairs (default 200) judged by five simulated annotators, the first
``--shared`` of them by two annotators (default 100: 300 judgements a round), so annotators can be compared.
Honest annotators copy the HH label and flip ``--noise`` of it (default 0.15: two honest annotators agree ~75 %).
Each judgement is a choice event (the completions in a random order) with an increasing ``created_at``.

Experiments, each reported against a fixed held-out set of ``--fixed`` HH pairs (default 300) no round sees:

1. **warm** and **scratch**: ``--rounds`` rounds (default 5) from the demo bundle, each round promoted into the
   server by ``PUT /admin/models`` when the gate passes; held-out accuracy, the gate and time per round.
2. **poisoned round**: after round 2 of the warm chain, one more annotator judges every item of the round with
   flipped labels (two thirds of the round's judgements); the round runs with the agreement filter on and off,
   each from the same state.
3. **implicit signals**: after round 2 of the warm chain, a round where half of the choices are replaced by an
   implicit event derived from them (``regenerate`` of the rejected reply, or ``copy`` of the chosen one, at their
   default weights), against the same round all explicit and against only its explicit half.

    python benchmarks/retrain_loop.py --data ../shared/data/hh_harmless_train.jsonl

Results: benchmarks/results/retrain_loop.{json,md}. One warm round on 2 cores takes minutes; the whole run ~40.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from machine import machine_info
from processes import free_port, start_server, stop_server

from rewardmodel import PreferenceExample, read_card
from rewardmodel.compare import pair_outcomes
from rewardmodel.sources import load_examples
from rewardserve.compare_cli import bundle_scores
from rewardserve.retrain import Mode, RetrainSettings, run_round

RESULTS = Path(__file__).parent / "results"
ADMIN = "bench-admin"
ANNOTATORS = ("a0", "a1", "a2", "a3", "a4")
START = datetime(2026, 11, 1, tzinfo=UTC)


class Server:
    """``rewardserve serve`` on a bundle and a SQLite store, with admin keys, as a real process."""

    def __init__(self, bundle: Path, db: Path, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = start_server(
            [sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port", str(self.port),
             "--backend", "onnx", "--variant", "fp32", "--log-level", "warning", "--feedback-db", str(db)],
            self.url + "/readyz", 600, env={"REWARDSERVE_HOME": str(work / "home"), "REWARDSERVE_ADMIN_KEYS": ADMIN},
            log=RESULTS.parent / ".server.log")
        self.name = read_card(bundle).name

    def post(self, events: list[dict[str, Any]]) -> None:
        for i in range(0, len(events), 500):
            r = httpx.post(self.url + "/feedback", json={"events": events[i:i + 500]}, timeout=120)
            r.raise_for_status()

    def served(self) -> Path:
        models = httpx.get(self.url + "/v1/models", timeout=30).json()["data"]
        return Path(next(m["rewardserve"]["path"] for m in models if m["id"] == self.name))

    def stop(self) -> None:
        stop_server(self.proc)


def judgements(examples: list[PreferenceExample], day: int, shared: int, noise: float, rng: random.Random,
               poisoner: str | None = None) -> list[dict[str, Any]]:
    """Choice events of one round: every item by one honest annotator, the first ``shared`` by two; with
    ``poisoner``, every item also by them, flipped."""
    events = []
    clock = START + timedelta(days=day)
    for i, ex in enumerate(examples):
        chosen, rejected = ex.completions[ex.pairs[0].better], ex.completions[ex.pairs[0].worse]
        judges = rng.sample(ANNOTATORS, 2 if i < shared else 1)
        votes = [(a, rng.random() >= noise) for a in judges] + ([(poisoner, False)] if poisoner else [])
        for annotator, right in votes:
            shown = [chosen, rejected]
            rng.shuffle(shown)
            best = chosen if right else rejected
            clock += timedelta(seconds=37)
            events.append({"id": f"d{day}-{i}-{annotator}", "prompt": ex.prompt, "completions": shown,
                           "choice": shown.index(best), "annotator": annotator, "source": "labeling",
                           "created_at": clock.isoformat()})
    rng.shuffle(events)  # arrival order is not item order; created_at keeps time
    return sorted(events, key=lambda e: e["created_at"])


def rejudged(examples: list[PreferenceExample], day: int) -> list[dict[str, Any]]:
    """Every item of ``examples`` judged once more by one annotator, flipped: a prolific poisoner."""
    rng = random.Random(day)
    events = judgements(examples, day, 0, 0.0, rng)
    for e in events:  # the honest annotator's judgement, turned into the poisoner's flipped one
        e["choice"], e["annotator"], e["id"] = 1 - e["choice"], "mallory", e["id"].rsplit("-", 1)[0] + "-mallory"
    return events


def implicit(events: list[dict[str, Any]], share: float, rng: random.Random, keep: bool) -> list[dict[str, Any]]:
    """Half (``share``) of the choices become an implicit event derived from them (``keep``), or are dropped."""
    out = []
    forms = random.Random(rng.random())  # which form, apart: the same choices are replaced whether kept or not
    for e in events:
        if rng.random() >= share:
            out.append(e)
            continue
        if not keep:
            continue
        best, worst = e["completions"][e["choice"]], e["completions"][1 - e["choice"]]
        base = {k: v for k, v in e.items() if k not in ("choice", "annotator", "completions")} | {"source": "chat-ui"}
        if forms.random() < 0.5:  # the user regenerated the worse reply and got the better one
            out.append(base | {"completions": [worst, best], "regenerate": 0})
        else:  # the user copied the better reply of the two shown
            out.append(base | {"completions": [worst, best], "copy": 1})
    return out


def accuracy(bundle: Path, fixed: list[PreferenceExample]) -> float:
    scores, _ = bundle_scores(str(bundle), "torch", fixed, 32)
    return float(pair_outcomes(fixed, scores).mean())


def summary(report: Any, held: float, seconds: float) -> dict[str, Any]:
    gate = report.gate or {}
    return {"result": report.result, "reason": report.reason, "fixed_heldout_accuracy": held,
            "seconds": round(seconds, 1), "train_events": report.data.get("train", {}).get("events"),
            "left_out": report.quality.get("annotators_left_out", {}),
            "gate": [{k: s.get(k) for k in ("set", "pairs", "baseline_accuracy", "candidate_accuracy", "gain",
                                             "interval", "passed")} for s in gate.get("sets", [])]}


def chain(mode: Mode, base: Path, rounds: list[list[PreferenceExample]], fixed: list[PreferenceExample],
          args: argparse.Namespace, work: Path, snapshot_after: int = 0) -> dict[str, Any]:
    """Rounds through a real server; returns per-round figures (and the state after ``snapshot_after``)."""
    root = work / mode
    shutil.copytree(base, root / "base")
    db = root / "feedback.db"
    server = Server(root / "base", db, root)
    rng = random.Random(1)
    settings = RetrainSettings(db=str(db), out=root / "rounds", server=server.url, name=server.name,
                               admin_key=ADMIN, min_new=args.min_new, mode=mode, variants=("fp32",),
                               progress=False, resamples=2000)
    out: dict[str, Any] = {"start_accuracy": accuracy(root / "base", fixed), "rounds": []}
    try:
        for number, items in enumerate(rounds, 1):
            server.post(judgements(items, number, args.shared, args.noise, rng))
            t = time.monotonic()
            report = run_round(settings)
            seconds = time.monotonic() - t
            served = server.served()
            out["rounds"].append(summary(report, accuracy(served, fixed), seconds))
            print(mode, number, json.dumps(out["rounds"][-1])[:400], flush=True)
            if number == snapshot_after:
                snap = work / f"{mode}-after-{number}"
                _copy_db(db, snap.with_suffix(".db"))
                out["snapshot"] = {"db": str(snap.with_suffix(".db")), "bundle": str(served)}
    finally:
        server.stop()
    return out


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite store (its WAL included), by SQLite's backup API."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def branch(name: str, snapshot: dict[str, Any], events: list[dict[str, Any]], fixed: list[PreferenceExample],
           args: argparse.Namespace, work: Path, **overrides: Any) -> dict[str, Any]:
    """One more round from a chain's state, on a server of its own, not promoted (the gate's verdict is kept)."""
    root = work / name
    root.mkdir()
    db = root / "feedback.db"
    _copy_db(Path(snapshot["db"]), db)
    bundle = Path(snapshot["bundle"])
    server = Server(bundle, db, root)
    try:
        server.post(events)
    finally:
        server.stop()
    settings = RetrainSettings(db=str(db), out=root / "rounds", base=bundle, min_new=1, mode="warm",
                               variants=("fp32",), progress=False)
    t = time.monotonic()
    report = run_round(replace(settings, **overrides))
    seconds = time.monotonic() - t
    held = accuracy(Path(report.candidate), fixed) if report.candidate else float("nan")
    out = summary(report, held, seconds) | {"base_accuracy": accuracy(bundle, fixed)}
    print(name, json.dumps(out)[:400], flush=True)
    return out


def heavy_poison(args: argparse.Namespace, rounds: list[list[PreferenceExample]], fixed: list[PreferenceExample],
                 work: Path) -> dict[str, Any]:
    """One clean warm round, then a round where the poisoner re-judges every item so far, flipped."""
    first = chain("warm", args.bundle, rounds[:1], fixed, args, work, snapshot_after=1)
    snapshot = first.pop("snapshot")
    poison = rejudged(rounds[0] + rounds[1], 20)
    events = judgements(rounds[1], 21, args.shared, args.noise, random.Random(21)) + poison
    honest = len(rounds[0]) + args.shared + len(events) - len(poison)  # round 1's judgements, and this round's
    out: dict[str, Any] = {"command": "python3 " + " ".join(sys.argv), "first_round": first,
                           "poisoned_share": len(poison) / (len(poison) + honest)}
    out["filter_on"] = branch("heavy_filter_on", snapshot, events, fixed, args, work)
    out["filter_off"] = branch("heavy_filter_off", snapshot, events, fixed, args, work, min_annotator_agreement=0.0)
    return out


def report(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrain_loop.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    m = result["machine"]
    a = result["args"]
    lines = [f"# The loop, simulated on HH-RLHF harmless ({m['cpu']}, {m['cores']} cores)", "",
             f"Rounds of {a['items']} HH pairs ({a['items'] + a['shared']} judgements: {a['shared']} items judged "
             f"twice) by 5 simulated annotators ({a['noise']:.0%} label noise each), posted to `/feedback` on a real "
             f"server (SQLite); `rewardserve retrain` after each round, base: the demo bundle. Accuracy on a fixed "
             f"held-out set of {a['fixed']} HH pairs no round sees. Versions: "
             f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}.", "",
             "## Warm against scratch", "", "| round | warm: result | warm: accuracy | warm: s | scratch: result | "
             "scratch: accuracy | scratch: s |", "|---|---|---|---|---|---|---|"]
    warm, scratch = result["warm"], result["scratch"]
    lines.append(f"| base | | {warm['start_accuracy']:.3f} | | | {scratch['start_accuracy']:.3f} | |")
    for i, (w, s) in enumerate(zip(warm["rounds"], scratch["rounds"], strict=True), 1):
        lines.append(f"| {i} | {w['result']} | {w['fixed_heldout_accuracy']:.3f} | {w['seconds']:.0f} | "
                     f"{s['result']} | {s['fixed_heldout_accuracy']:.3f} | {s['seconds']:.0f} |")
    after = result["branched_after_round"]
    lines += ["", "## A poisoned round", "",
              f"After warm round {after}: one more annotator judges every item of the next round, flipped (2/3 of its "
              "judgements); the round runs with the agreement filter on, and off, from the same state.",
              "", "| agreement filter | result | left out | fixed held-out: base → candidate | gate |",
              "|---|---|---|---|---|"]
    for name in ("poisoned_filter_on", "poisoned_filter_off"):
        b = result[name]
        gate = "; ".join(f"{g['set']}: {g['candidate_accuracy']:.3f} vs {g['baseline_accuracy']:.3f} "
                         f"[{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}]" for g in b["gate"] if g.get("interval"))
        left = ", ".join(f"{k} ({v['agreement']:.2f})" for k, v in b["left_out"].items()) or "nobody"
        lines.append(f"| {'on' if name.endswith('on') else 'off'} | {b['result']} | {left} | "
                     f"{b['base_accuracy']:.3f} → {b['fixed_heldout_accuracy']:.3f} | {gate} |")
    lines += ["", "## What implicit signals are worth", "",
              f"After warm round {after}, the next round three ways: half of its choices replaced by a `regenerate` or "
              "`copy` event derived from them (default weights 0.5), or dropped.", "",
              "| next round | train events | fixed held-out: base → candidate |", "|---|---|---|"]
    for name, label in (("explicit_all", "all explicit"), ("implicit_half", "half explicit, half implicit"),
                        ("explicit_half", "only the explicit half")):
        b = result[name]
        lines.append(f"| {label} | {b['train_events']} | {b['base_accuracy']:.3f} → "
                     f"{b['fixed_heldout_accuracy']:.3f} |")
    if "heavy_poison" in result:
        h = result["heavy_poison"]
        lines += ["", "## A heavier poisoning", "",
                  f"A separate run (`{h['command']}`): one warm round from the demo bundle, then a round where "
                  f"the poisoner re-judges every item so far, flipped, beside the round's honest judgements "
                  f"({h['poisoned_share']:.0%} of the judgements in the store).", "",
                  "| agreement filter | result | left out | fixed held-out: base → candidate |", "|---|---|---|---|"]
        for key, label in (("filter_on", "on"), ("filter_off", "off")):
            b = h[key]
            left = ", ".join(f"{k} ({v['agreement']:.2f})" for k, v in b["left_out"].items()) or "nobody"
            lines.append(f"| {label} | {b['result']} | {left} | {b['base_accuracy']:.3f} → "
                         f"{b['fixed_heldout_accuracy']:.3f} |")
    lines += ["", f"Reproduce: `{result['command']}`", ""]
    (RESULTS / "retrain_loop.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="HH-RLHF harmless pairs (../shared/data)")
    parser.add_argument("--bundle", type=Path, default=Path("~/.cache/rewardserve/demo-minilm").expanduser())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=200, help="HH pairs per round")
    parser.add_argument("--shared", type=int, default=100, help="of them, judged by two annotators")
    parser.add_argument("--noise", type=float, default=0.15, help="an honest annotator's flip rate")
    parser.add_argument("--fixed", type=int, default=300, help="HH pairs of the fixed held-out set")
    parser.add_argument("--min-new", type=int, default=100)
    parser.add_argument("--heavy-poison-only", action="store_true",
                        help="only the heavier poisoning (added to the results of a full run)")
    args = parser.parse_args()
    examples = load_examples(args.data)
    random.Random(0).shuffle(examples)
    fixed, rest = examples[:args.fixed], examples[args.fixed:]
    rounds = [rest[i * args.items:(i + 1) * args.items] for i in range(args.rounds)]
    extra = rest[args.rounds * args.items:(args.rounds + 1) * args.items]
    if len(extra) < args.items:
        raise SystemExit(f"{args.data}: not enough pairs for {args.rounds} rounds and the branches")
    work = Path(tempfile.mkdtemp(prefix="retrain-loop-"))
    if args.heavy_poison_only:
        earlier: dict[str, Any] = json.loads((RESULTS / "retrain_loop.json").read_text())
        earlier["heavy_poison"] = heavy_poison(args, rounds, fixed, work)
        report(earlier)
        shutil.rmtree(work, ignore_errors=True)
        return
    result: dict[str, Any] = {"benchmark": "retrain_loop", "machine": machine_info(), "args": vars(args) | {
        "bundle": str(args.bundle)}, "command": "python3 " + " ".join(sys.argv)}
    after = result["branched_after_round"] = min(2, args.rounds)
    result["warm"] = chain("warm", args.bundle, rounds, fixed, args, work, snapshot_after=after)
    snapshot = result["warm"].pop("snapshot")
    result["scratch"] = chain("scratch", args.bundle, rounds, fixed, args, work)
    rng = random.Random(3)
    poisoned = judgements(extra, 10, args.shared, args.noise, rng, poisoner="mallory")
    result["poisoned_filter_on"] = branch("poisoned_filter_on", snapshot, poisoned, fixed, args, work)
    result["poisoned_filter_off"] = branch("poisoned_filter_off", snapshot, poisoned, fixed, args, work,
                                           min_annotator_agreement=0.0)
    clean = judgements(extra, 10, args.shared, args.noise, random.Random(4))
    result["explicit_all"] = branch("explicit_all", snapshot, clean, fixed, args, work)
    result["implicit_half"] = branch("implicit_half", snapshot, implicit(clean, 0.5, random.Random(5), True),
                                     fixed, args, work)
    result["explicit_half"] = branch("explicit_half", snapshot, implicit(clean, 0.5, random.Random(5), False),
                                     fixed, args, work)
    report(result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
