"""``rewardserve compare``, the promotion gate: real bundles, real data files and a real feedback store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rewardmodel.compare import compare, paired_bootstrap
from tests.cli import run_cli
from tests.conftest import edited_bundle


@pytest.fixture(scope="module")
def reversed_bundle(tmp_path_factory: pytest.TempPathFactory, trained_bert_bundle: Path) -> Path:
    """The trained tiny BERT with its score head negated: it orders every pair the other way round."""

    def negate_head(weights: dict[str, Any]) -> None:
        for key in [k for k in weights if k.startswith("classifier.")]:
            weights[key] = -weights[key]

    return edited_bundle(trained_bert_bundle, tmp_path_factory.mktemp("reversed") / "bundle", negate_head)


def test_compare_passes_a_better_candidate_and_fails_a_worse_one(trained_bert_bundle: Path, reversed_bundle: Path,
                                                                 good_bad_files: tuple[Path, Path]) -> None:
    data = str(good_bad_files[1])
    better = run_cli("compare", "--baseline", str(reversed_bundle), "--candidate", str(trained_bert_bundle),
                     "--data", data)
    assert better.returncode == 0, better.stderr
    out = json.loads(better.stdout)
    assert out["passed"] and out["pairs"] == 64 and out["baseline"]["ran"] == "torch"
    assert out["candidate_accuracy"] >= 0.95 and out["baseline_accuracy"] == pytest.approx(
        1 - out["candidate_accuracy"])  # no ties: the reversed head gets exactly the other pairs right
    lo, hi = out["interval"]
    assert lo <= out["gain"] <= hi and lo > 0.5
    assert out["by_source"] == {"(none)": {"pairs": 64, "baseline_accuracy": out["baseline_accuracy"],
                                           "candidate_accuracy": out["candidate_accuracy"], "gain": out["gain"]}}
    worse = run_cli("compare", "--baseline", str(trained_bert_bundle), "--candidate", str(reversed_bundle),
                    "--data", data)
    assert worse.returncode == 1, worse.stderr
    assert not json.loads(worse.stdout)["passed"]
    # the same model against itself: gain 0 with a zero-width interval; it passes, unless a gain is demanded
    same = [run_cli("compare", "--baseline", str(trained_bert_bundle), "--candidate", str(trained_bert_bundle),
                    "--data", data, *extra) for extra in ([], ["--min-gain", "0.01"], ["--min-gain", "-0.01"])]
    assert [p.returncode for p in same] == [0, 1, 0]
    assert json.loads(same[0].stdout)["interval"] == [0.0, 0.0]


def test_compare_reads_the_feedback_store_since_a_time_and_breaks_down_by_source(
        trained_bert_bundle: Path, reversed_bundle: Path, tmp_path: Path) -> None:
    from feedback.events import FeedbackEvent
    from feedback.store import FeedbackStore

    db = tmp_path / "feedback.db"
    store = FeedbackStore(str(db))
    store.migrate()
    for i, (source, when) in enumerate([("chat-ui", "2026-01-01T00:00:00Z"), ("labeling", "2026-03-01T00:00:00Z"),
                                        ("chat-ui", "2026-03-02T00:00:00Z")]):
        store.add([FeedbackEvent.model_validate({
            "prompt": "how are you ?", "completions": [" i am good .", " i am bad ."], "choice": 0,
            "source": source, "created_at": when, "id": f"e{i}"})], datetime.now(UTC))
    store.close()
    proc = run_cli("compare", "--baseline", str(reversed_bundle), "--candidate", str(trained_bert_bundle),
                   "--data", f"sqlite:///{db}", "--since", "2026-02-01")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["pairs"] == 2 and set(out["by_source"]) == {"chat-ui", "labeling"}
    assert out["by_source"]["labeling"]["pairs"] == 1
    refused = run_cli("compare", "--baseline", str(reversed_bundle), "--candidate", str(trained_bert_bundle),
                      "--data", str(db), "--since", "2026-02-01")
    assert refused.returncode == 2 and "--since filters the feedback store" in refused.stderr


def test_the_paired_bootstrap_is_tighter_than_independent_samples_would_be() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.7).astype(np.float64)
    b = a.copy()
    flip = rng.choice(400, 20, replace=False)  # the models disagree on 20 pairs only
    b[flip] = 1 - b[flip]
    lo, hi = paired_bootstrap(a, b, 2000)
    assert lo <= b.mean() - a.mean() <= hi and hi - lo < 0.05  # independent 95% width would be ~0.13
    result = compare(a, b, ["x"] * 400)
    assert result.passed == (result.interval[1] >= 0)
    with pytest.raises(ValueError, match="no preference pairs"):
        compare(np.zeros(0), np.zeros(0), [])
