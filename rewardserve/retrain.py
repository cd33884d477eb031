"""One round of the loop: new human feedback → a retrained reward model, gated, exported and hot-swapped.

``rewardserve retrain`` (:mod:`rewardserve.retrain_cli`) runs :func:`run_round`:

1. **The base** is ``--from DIR``, or the bundle the server serves under ``--name`` (its path from
   ``/v1/models``). Its card's ``training.lineage`` says up to when its data reached and which time windows
   earlier rounds held out.
2. **The trigger**: fewer than ``min_new`` judgements since then, and the round is skipped (exit 0).
3. **Quality** (:mod:`feedback.quality`): duplicates, self-contradictions and annotators who disagree with the
   others are left out, counted and named.
4. **Held out, by time**: the newest ``heldout_share`` of the new judgements is never trained on; it is this
   round's test set, kept (as a time window in the lineage) for every later round, as Llama 2 kept its per-batch
   sets. Held-out sets hold explicit judgements only: a weak signal is no test.
5. **Training**: ``scratch`` (the default: it did better than ``warm`` in benchmarks/retrain_loop.py) trains the
   backbone on all earlier and new data with the base's recipe; ``warm`` continues from the base for one epoch on
   all of it (replay).
6. **The gate** (:func:`rewardmodel.compare.compare`, the paired bootstrap of ``rewardserve compare``): on the
   fresh held-out set the candidate must not be worse beyond the interval, and on every earlier round's set it
   must not regress beyond it. Results break down by source and by annotator agreement.
7. **Then**: the lineage into the candidate's card, export through the parity gate, ``PUT
   /admin/models/{name}``, and a check that the server answers with the new version.

A round's state is kept in its directory (``round.json``): a run that stopped between export and swap (a crash, a
server that was down) finds the exported candidate of the same parent and promotes it instead of training again.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from rewardmodel import RewardModelError, read_card, write_card
from rewardmodel.card import BundleCard, content_id
from rewardserve.promotion import promote, served_bundle
from rewardserve.round_gate import agreement_labels, gate

log = logging.getLogger(__name__)

Mode = Literal["warm", "scratch"]
FUTURE_TOLERANCE = timedelta(minutes=5)
"""Judgements dated later than this after the round starts wait for a later round (clock skew is forgiven)."""
Result = Literal["promoted", "exported", "refused", "skipped"]
"""promoted: swapped in; exported: passed and exported, no server to swap it on (--from without --server);
refused: the gate (or the parity gate) said no; skipped: too few new judgements."""
EXPLICIT = ("choice", "ranking", "ratings", "thumbs")
"""The forms a held-out set keeps."""


@dataclass(frozen=True)
class RetrainSettings:
    """What one round does (``rewardserve retrain``'s flags)."""

    db: str
    out: Path
    base: Path | None = None
    server: str | None = None
    name: str | None = None
    admin_key: str | None = None
    api_key: str | None = None
    min_new: int = 1000
    mode: Mode = "scratch"
    heldout_share: float = 0.2
    min_annotator_agreement: float = 0.5
    min_comparisons: int = 10
    implicit_weights: dict[str, float] = field(default_factory=dict)
    epochs: float | None = None
    """None: 1 for warm (Llama 2's one epoch per round), the base's own for scratch."""
    variants: tuple[str, ...] | None = None
    """ONNX variants to export; None: the base's."""
    calibration_data: str = ""
    """Preference data for the export's parity gate (empty: the demo set's held-out split, as ``export``)."""
    calibration_samples: int = 256
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    swap_timeout_s: float = 900.0
    all_replicas: bool = False
    """Swap every replica behind ``server``'s host name (a headless Service's DNS name lists each pod), not only
    the one a load-balanced address reaches."""
    progress: bool = True


@dataclass
class RoundReport:
    """What a round did; printed as JSON, and its ``result`` decides the exit code."""

    result: Result
    reason: str
    round: int = 0
    base: str = ""
    candidate: str | None = None
    new_judgements: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    promoted: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: v for k, v in self.__dict__.items()}


def run_round(s: RetrainSettings, swap: Callable[[Path], dict[str, Any]] | None = None) -> RoundReport:
    """Run one round; ``swap`` promotes a bundle (default: ``PUT /admin/models/{name}`` on ``s.server``)."""
    from feedback.events import utc_now
    from feedback.store import FeedbackStore

    clock: dict[str, float] = {}
    started = time.monotonic()
    pending = _pending(s.out)
    if pending is not None and (swap is not None or s.server):
        # a run that stopped after its export (before, during or after the swap: some replicas may serve the
        # candidate already): finish that round on every replica before looking for a base
        work, state = pending
        log.info("%s was exported before; promoting it", work.name)
        report = RoundReport(**state["report"])
        report.result, report.reason = "promoted", report.reason + "; promoted by a re-run"
        report.promoted = promote(swap, Path(state["candidate"]), s)
        _save_state(work, {**state, "stage": "promoted", "report": report.to_dict()})
        _record(s, read_card(Path(state["candidate"])), report)
        return report
    base = s.base if s.base is not None else served_bundle(s)
    card = read_card(base)
    lineage = card.training.get("lineage", {})
    number = int(lineage.get("round", 0)) + 1
    parent = bundle_id(card)
    work = s.out / f"round-{number}-{parent}"

    store = FeedbackStore(s.db, pool_size=1, must_exist=True)
    try:
        stored = list(store.events())
    finally:
        store.close()
    # a judgement dated after now (a client's clock, or a typo) would become data_until and hold every later one
    # out of training: it waits for its time, counted
    horizon = utc_now() + FUTURE_TOLERANCE
    every = [e for e in stored if e.created_at <= horizon]
    until = _moment(lineage.get("data_until"))
    new = [e for e in every if until is None or e.created_at > until]
    report = RoundReport("skipped", "", number, str(base), new_judgements=len(new))
    if len(every) < len(stored):
        report.data["dated_in_the_future"] = len(stored) - len(every)
    if len(new) < s.min_new:
        report.reason = f"{len(new)} new judgements since the base's data; --min-new is {s.min_new}"
        _record(s, card, report)
        return report

    from feedback.quality import clean

    kept, quality = clean(every, s.min_annotator_agreement, s.min_comparisons)
    report.quality = quality.to_dict()
    fresh = [e for e in kept if until is None or e.created_at > until]
    if len(fresh) < 2:
        report.reason = "nothing left of the new judgements after the quality filter"
        _record(s, card, report)
        return report
    cut = fresh[min(len(fresh) - 1, int(len(fresh) * (1 - s.heldout_share)))].created_at
    window = [_iso(cut), _iso(fresh[-1].created_at)]
    windows = [*lineage.get("heldout", []), window]
    heldout_of = [[e for e in kept if _within(e.created_at, w)] for w in windows]
    last = fresh[-1].created_at
    train = [e for e in kept if e.created_at <= last and not any(_within(e.created_at, w) for w in windows)]
    work.mkdir(parents=True, exist_ok=True)
    files = _write_data(work, train, heldout_of, s.implicit_weights)
    report.data |= {"new": {"since": _iso(until) if until else None, "until": window[1]},
                   "train": _counts(train), "heldout": [_counts(h) | {"window": w} for h, w in zip(
                       heldout_of, windows, strict=True)]}
    clock["data"] = time.monotonic() - started

    candidate = work / "candidate"
    t = time.monotonic()
    # training reports its accuracy on the newest held-out set that has any (an empty one: implicit signals only)
    evaluated = next((p for p in reversed(files["heldout"]) if p.stat().st_size), None)
    backbone = _train(s, card, base, files["train"], evaluated, candidate, number)
    clock["train"] = time.monotonic() - t

    t = time.monotonic()
    labels = agreement_labels(kept)
    report.gate = gate(base, candidate, files["heldout"], labels, s)
    clock["gate"] = time.monotonic() - t
    report.candidate = str(candidate)
    if not report.gate["passed"]:
        report.result, report.reason = "refused", report.gate["why"]
        report.seconds = clock | {"total": time.monotonic() - started}
        _save_state(work, {"stage": "refused", "candidate": str(candidate), "report": report.to_dict()})
        _record(s, card, report)
        return report

    new_lineage = {"round": number, "parent": {"name": card.name, "id": parent, "path": str(base)},
                   "mode": s.mode, "backbone": backbone, "data_until": window[1], "heldout": windows,
                   "data": report.data, "quality": report.quality, "gate": report.gate}
    written = read_card(candidate)
    write_card(candidate, replace(written, training={**written.training, "lineage": new_lineage}))
    t = time.monotonic()
    from export.parity import ParityError

    try:
        _export(candidate, s.variants or _variants(card), s)
    except ParityError as exc:
        report.result, report.reason = "refused", f"the candidate's export missed the parity gate: {exc}"
        _save_state(work, {"stage": "refused", "candidate": str(candidate), "report": report.to_dict()})
        _record(s, card, report)
        return report
    clock["export"] = time.monotonic() - t
    report.seconds = clock | {"total": time.monotonic() - started}
    report.result, report.reason = "exported", "the candidate passed the gate on every held-out set"
    _save_state(work, {"stage": "exported", "candidate": str(candidate), "report": report.to_dict()})
    if swap is None and not s.server:
        _save_state(work, {"stage": "done", "candidate": str(candidate), "report": report.to_dict()})
        _record(s, card, report)
        return report  # nothing to swap it on: serve it, or PUT it yourself
    report.result = "promoted"
    t = time.monotonic()
    report.promoted = promote(swap, candidate, s)
    report.seconds["swap"] = time.monotonic() - t
    _save_state(work, {"stage": "promoted", "candidate": str(candidate), "report": report.to_dict()})
    _record(s, card, report)
    return report


def _record(s: RetrainSettings, card: BundleCard, report: RoundReport) -> None:
    """The round into the store's record (``retrain_rounds``): the metrics and ``--watch`` read it. A promotion
    keeps the parent's live accuracy at that moment, what the new version is held to."""
    from feedback.events import utc_now
    from feedback.rounds import Round, live_accuracy, record_round
    from feedback.store import FeedbackStore

    answer = report.promoted or {}
    previous = answer.get("previous") or {}
    store = FeedbackStore(s.db, pool_size=1, must_exist=True)
    try:
        parent_accuracy = live_accuracy(store, previous["version"]) if previous.get("version") else None
        record_round(store, Round(s.name or card.name, report.round, report.result, utc_now(),
                                  answer.get("version"), previous.get("version"), report.base, report.candidate,
                                  parent_accuracy, report.to_dict()))
    finally:
        store.close()


def _pending(out: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest round under ``out`` that was exported and not yet promoted everywhere, with its state."""
    found = []
    for path in out.glob("round-*/round.json"):
        state = _load_state(path.parent)
        if state.get("stage") == "exported":
            found.append((path.stat().st_mtime, path.parent, state))
    if not found:
        return None
    _, work, state = max(found, key=lambda f: f[0])
    return work, state


def bundle_id(card: BundleCard) -> str:
    """A bundle's content id, whatever engine serves it (its files' hashes)."""
    return content_id(card)


# -- data -----------------------------------------------------------------------------------------------------

def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _within(moment: datetime, window: Sequence[str]) -> bool:
    lo, hi = _moment(window[0]), _moment(window[1])
    assert lo is not None and hi is not None
    return lo <= moment <= hi


def _counts(events: Sequence[Any]) -> dict[str, Any]:
    return {"events": len(events), "by_form": dict(Counter(e.event.form for e in events)),
            "by_source": dict(Counter(e.event.source or "none" for e in events))}


def _write_data(work: Path, train: Sequence[Any], heldout: Sequence[Sequence[Any]],
                weights: dict[str, float]) -> dict[str, Any]:
    """The round's training file and one held-out file per round (explicit judgements only)."""
    from feedback.export import training_records

    def write(path: Path, events: Sequence[Any], weights: dict[str, float]) -> Path:
        with path.open("w", encoding="utf-8") as fh:
            for record in training_records(events, weights=weights):
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path

    held = [write(work / f"heldout-round-{i}.jsonl", [e for e in events if e.event.form in EXPLICIT], {})
            for i, events in enumerate(heldout, 1)]
    return {"train": write(work / "train.jsonl", train, weights), "heldout": held}


# -- training and export -----------------------------------------------------------------------------------

def _train(s: RetrainSettings, card: BundleCard, base: Path, train: Path, heldout: Path | None, out: Path,
           number: int) -> str:
    """Train the candidate; returns the backbone of the lineage (what ``scratch`` starts from)."""
    from training.config import TrainConfig, build_config
    from training.run import train as run_training

    recipe = dict(card.training.get("config", {}))
    if not recipe:
        raise RewardModelError(f"{base}: its card records no training recipe (training.config); retrain continues "
                               "bundles that `rewardserve train` wrote")
    known = set(TrainConfig.__dataclass_fields__)
    recipe = {k: v for k, v in recipe.items() if k in known}
    backbone = str(card.training.get("lineage", {}).get("backbone") or recipe.get("model", ""))
    model = str(base) if s.mode == "warm" else backbone
    epochs = s.epochs if s.epochs is not None else 1.0 if s.mode == "warm" else float(recipe.get("epochs", 1.0))
    recipe |= {"model": model, "train_data": str(train), "eval_data": str(heldout or ""), "output_dir": str(out),
               "overwrite": True, "resume": "", "epochs": epochs, "max_steps": -1, "limit": 0, "save_steps": 0,
               "name": card.name, "seed": int(recipe.get("seed", 42)) + number}
    log.info("round %d: training %s (%s, %g epochs) on %s", number, model, s.mode, epochs, train)
    run_training(build_config(None, {}, recipe), progress=s.progress)
    return backbone


def _variants(card: BundleCard) -> tuple[str, ...]:
    exported = tuple(v for v in ("fp32", "int8", "int8-static", "fp16") if v in card.onnx)
    return exported or ("fp32", "int8")


def _export(candidate: Path, variants: tuple[str, ...], s: RetrainSettings) -> None:
    from export.run import ExportSettings, export_bundle

    log.info("exporting %s through the parity gate", ", ".join(variants))
    export_bundle(candidate, ExportSettings(variants=variants, calibration_data=s.calibration_data,
                                            samples=s.calibration_samples))


# -- the round's state ----------------------------------------------------------------------------------------

def _load_state(work: Path) -> dict[str, Any]:
    path = work / "round.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _save_state(work: Path, state: dict[str, Any]) -> None:
    """Written whole or not at all (a crash leaves the previous state)."""
    work.mkdir(parents=True, exist_ok=True)
    partial = work / "round.json.partial"
    partial.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    partial.replace(work / "round.json")

