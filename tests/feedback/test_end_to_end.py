"""The loop, end to end: humans' choices, rankings and ratings posted to a live server, exported, a tiny
model trained on the export and evaluated; and training straight from the store gives the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from rewardmodel.sources import load_examples
from tests.helpers import good_bad_rows
from tests.server import running


def judgements(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The good/bad preference set as the three kinds of human feedback, in turn."""
    out = []
    for i, row in enumerate(rows):
        base = {"id": f"e2e-{i}", "prompt": row["prompt"], "annotator": f"labeler-{i % 3}", "source": "labeling"}
        if i % 3 == 0:
            out.append({**base, "completions": [row["rejected"], row["chosen"]], "choice": 1})
        elif i % 3 == 1:
            out.append({**base, "completions": [row["rejected"], row["chosen"]], "ranking": [1, 0]})
        else:
            out.append({**base, "completions": [row["chosen"], row["rejected"]], "ratings": [4, 2], "scale": [1, 5]})
    return out


def cli(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "rewardserve", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_post_export_train_evaluate(bert_onnx_bundle: Path, tiny_bert: Path, good_bad_files: tuple[Path, Path],
                                    tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    sent = judgements(good_bad_rows(192, seed=1, chat_every=5))
    with running(model=bert_onnx_bundle, feedback_db=str(db)) as live:
        for start in range(0, len(sent), 50):
            r = httpx.post(live.url + "/feedback", json={"events": sent[start:start + 50]}, timeout=30)
            assert r.status_code == 200 and r.json()["accepted"] == len(sent[start:start + 50])

    out = tmp_path / "human.jsonl"
    report = cli("feedback", "export", "--db", str(db), "--out", str(out), "--source", "labeling")
    # 64 choices and 64 rankings give a record each; 64 ratings events give one pointwise record per rated reply
    assert report["events"] == 192 and report["records"] == 64 + 64 + 128 and report["skipped"] == {}
    assert report["by_form"] == {"choice": 64, "ranking": 64, "ratings": 64}
    # training reads the store directly as well, to the same preferences
    as_pairs = lambda src: sorted(  # noqa: E731
        (json.dumps(ex.prompt), ex.completions[p.better], ex.completions[p.worse])
        for ex in load_examples(src) for p in ex.pairs)
    assert as_pairs(f"sqlite:///{db}?source=labeling") == as_pairs(str(out))

    bundle = tmp_path / "from-feedback"
    trained = cli("train", "--quiet", "--model", str(tiny_bert), "--train-data", str(out), "--eval-data",
                  str(good_bad_files[1]), "--output-dir", str(bundle), "--learning-rate", "3e-3", "--epochs", "4",
                  "--batch-size", "16", "--max-length", "64", "--save-steps", "0", "--warmup-ratio", "0")
    evaluated = cli("eval", "--model", str(bundle), "--data", str(good_bad_files[1]), "--quiet")
    assert evaluated["accuracy"] == trained["report"]["accuracy"] >= 0.95, (trained, evaluated)

    stats = cli("feedback", "stats", "--db", str(db))
    assert stats["events"] == 192 and stats["by_annotator"] == {"labeler-0": 64, "labeler-1": 64, "labeler-2": 64}
