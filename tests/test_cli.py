"""The `rewardserve` command as a user runs it: a real subprocess, JSON on stdout, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewardmodel import read_card


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rewardserve", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_eval_reproduces_the_accuracy_training_reported(trained_bert_bundle: Path,
                                                        good_bad_files: tuple[Path, Path]) -> None:
    proc = run_cli("eval", "--model", str(trained_bert_bundle), "--data", str(good_bad_files[1]), "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    reported = read_card(trained_bert_bundle).training["result"]["report"]
    assert out["accuracy"] == reported["accuracy"] >= 0.95
    assert out["mean_margin"] == pytest.approx(reported["mean_margin"], abs=1e-5)
    assert out["pairs"] == 64 and out["model"] == "tiny-bert-rm"
    assert set(out) >= {"accuracy_by_length", "length_spearman", "model_prefers_longer", "reward_std"}


def test_missing_bundle_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("eval", "--model", str(tmp_path), "--data", "builtin:demo:heldout")
    assert proc.returncode == 2
    assert "reward_model.json is missing" in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_data_names_the_line(trained_bert_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a"}\n')
    proc = run_cli("eval", "--model", str(trained_bert_bundle), "--data", str(bad))
    assert proc.returncode == 2 and f"{bad}:2: unrecognised record" in proc.stderr


def test_train_refuses_to_overwrite_a_bundle(trained_bert_bundle: Path) -> None:
    proc = run_cli("train", "--model", "x", "--train-data", "builtin:demo", "--output-dir", str(trained_bert_bundle))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


@pytest.mark.slow
def test_demo_trains_minilm_to_90_percent_then_uses_the_cache(tmp_path: Path) -> None:
    """The README's first command: MiniLM on the demo preferences, exported, within minutes on 2 CPU cores."""
    env = {"REWARDSERVE_HOME": str(tmp_path)}
    first = run_cli("demo", "--quiet", env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    out = json.loads(first.stdout)
    assert out["accuracy"] >= 0.90 and out["pairs"] == 400
    # the demo also exports ONNX fp32 and int8, each passing the parity gate, and evaluates them
    card = read_card(tmp_path / "demo-minilm")
    assert card.onnx["fp32"]["parity_passed"] and card.onnx["int8"]["parity_passed"]
    assert out["onnx"]["fp32"]["accuracy"] == out["accuracy"]
    assert out["onnx"]["int8"]["accuracy"] >= 0.90
    assert read_card(tmp_path / "demo-minilm").training["result"]["report"]["accuracy"] == out["accuracy"]
    second = run_cli("demo", "--quiet", env=env)
    assert second.returncode == 0 and "using the cached demo model" in second.stderr
    assert json.loads(second.stdout)["accuracy"] == out["accuracy"]
