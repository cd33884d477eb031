"""The demo's pipeline: train MiniLM on the packaged demo preferences (once; cached), export its ONNX variants,
evaluate every one on the held-out pairs, and queue a few of them for labeling. ``rewardserve demo`` runs it and
then serves the bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rewardserve.evaluate import evaluate_bundle

DEMO_VARIANTS = ("fp32", "int8", "int8-static")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEMO_ANNOTATOR = ("demo:demo",)
"""The demo's annotator (NAME:KEY), unless REWARDSERVE_ANNOTATOR_KEYS says otherwise; loopback only."""
DEMO_LABEL_ITEMS = 40


def build_demo(bundle: Path, retrain: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (unless cached, or ``retrain``) and export the demo bundle into ``bundle``; return its evaluation:
    torch's report, and each ONNX variant's accuracy, margin and reward statistics under ``onnx``."""
    from export.run import ExportSettings, export_bundle
    from rewardmodel import CARD_NAME, read_card
    from rewardmodel.sources import DEMO_DATA
    from training.config import build_config
    from training.run import train

    if retrain or not (bundle / CARD_NAME).is_file():
        print(f"training the demo model into {bundle} (a few minutes on a laptop CPU) …", file=sys.stderr)
        train(build_config("demo", {}, {"output_dir": str(bundle), "overwrite": True}), progress=progress)
    else:
        print(f"using the cached demo model in {bundle} (--retrain to rebuild it)", file=sys.stderr)
    if not set(DEMO_VARIANTS) <= set(read_card(bundle).onnx):
        print(f"exporting ONNX variants {', '.join(DEMO_VARIANTS)} …", file=sys.stderr)
        export_bundle(bundle, ExportSettings(variants=DEMO_VARIANTS))
    data = f"{DEMO_DATA}:heldout"
    out = evaluate_bundle(str(bundle), data, progress=progress)
    out["onnx"] = {}
    for variant in DEMO_VARIANTS:
        report = evaluate_bundle(str(bundle), data, progress=progress, variant=variant)
        out["onnx"][variant] = {k: report[k] for k in ("accuracy", "mean_margin", "reward_mean", "reward_std")}
    out["bundle"] = str(bundle)
    return out


def seed_labeling(db: str, data: str, per_task: int, limit: int = DEMO_LABEL_ITEMS) -> int:
    """Queue the first ``limit`` examples of ``data`` for labeling (their completions in a shuffled order, so
    the preferred one is not always first); returns how many were new (a restart queues nothing twice)."""
    import random

    from feedback.events import utc_now
    from feedback.queue import LabelQueue, LabelTask
    from feedback.store import FeedbackStore
    from rewardmodel.sources import load_examples

    tasks = []
    for ex in load_examples(data, limit=limit):
        completions = list(ex.completions)
        random.Random(str(ex.prompt)).shuffle(completions)
        tasks.append(LabelTask(prompt=ex.prompt, completions=completions, source="demo"))
    store = FeedbackStore(db, pool_size=1)
    try:
        return LabelQueue(store, per_task).add(tasks, utc_now())
    finally:
        store.close()
