"""The `rewardserve` command as a user runs it: a real subprocess, JSON on stdout, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import httpx
import pytest

from rewardmodel import read_card
from rewardserve.cli import DEMO_SERVE
from rewardserve.demo import DEMO_VARIANTS
from tests.cli import run_cli
from tests.helpers import free_port, wait_ready


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
@pytest.mark.timeout(2400)  # ~250 s alone on 2 cores; CI machines are shared, and 900 s timed out twice there
def test_demo_trains_minilm_to_90_percent_then_uses_the_cache(tmp_path: Path) -> None:
    """The README's first command: MiniLM on the demo preferences, exported, within minutes on 2 CPU cores."""
    env = {"REWARDSERVE_HOME": str(tmp_path)}
    first = run_cli("demo", "--quiet", "--no-serve", env=env, timeout=2000)
    assert first.returncode == 0, first.stderr[-3000:]
    out = json.loads(first.stdout)
    assert out["accuracy"] >= 0.90 and out["pairs"] == 400
    # the demo also exports ONNX fp32, int8 and int8-static, each passing the parity gate, and evaluates them
    card = read_card(tmp_path / "demo-minilm")
    assert all(card.onnx[v]["parity_passed"] for v in ("fp32", "int8", "int8-static"))
    assert out["onnx"]["fp32"]["accuracy"] == out["accuracy"]
    assert out["onnx"]["int8"]["accuracy"] >= 0.90 and out["onnx"]["int8-static"]["accuracy"] >= 0.90
    assert read_card(tmp_path / "demo-minilm").training["result"]["report"]["accuracy"] == out["accuracy"]
    # the second run finds the cache and serves the model: the README's first command, as users run it
    port = free_port()
    second = subprocess.Popen([sys.executable, "-m", "rewardserve", "demo", "--quiet", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    try:
        assert second.stdout is not None
        assert json.loads(_read_json(second.stdout))["accuracy"] == out["accuracy"]
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        egg = "How do I boil an egg?"
        scores = httpx.post(url + "/score", json={"items": [
            {"prompt": egg, "completion": "Place the egg in boiling water for nine minutes, then cool it."},
            {"prompt": egg, "completion": "no idea lol"}]}).json()["scores"]
        assert scores[0] > scores[1]
        served = httpx.get(url + "/v1/models").json()["data"][0]["rewardserve"]
        # the fastest engine on this machine, timed among the variants the demo exported
        assert served["engine"]["chosen"] in ("measured", "remembered") and served["variant"] in DEMO_VARIANTS
        timed = {(r["backend"], r["variant"]): r["items_per_s"] for r in served["engine"]["table"]
                 if "items_per_s" in r}
        assert len(timed) >= 4 and timed[served["backend"], served["variant"]] == max(timed.values())
        # the demo takes feedback into $REWARDSERVE_HOME/feedback.db (the README's example)
        event = {"id": "demo-1", "prompt": egg, "completions": ["Boil it for nine minutes.", "no idea lol"],
                 "choice": 0, "scores": scores, "reward_model": "rewardserve-demo-minilm"}
        assert httpx.post(url + "/feedback", json={"events": [event]}).json() == {"accepted": 1, "duplicates": 0}
        # and it queues demo items for labeling, with the annotator key 'demo' (the newcomer flow)
        demo = {"Authorization": "Bearer demo"}
        task = httpx.get(url + "/label/next", headers=demo).json()["task"]
        assert task["source"] == "demo" and len(task["completions"]) == 2
        judged = httpx.post(url + "/label/submit", json={"task_id": task["id"], "ranking": [1, 0]}, headers=demo)
        assert judged.json()["judged"] == 1, judged.text
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    assert "using the cached demo model" in (second.stderr.read() if second.stderr else "")
    stats = run_cli("feedback", "stats", "--db", str(tmp_path / "feedback.db"))
    assert json.loads(stats.stdout)["live_accuracy"] == {"rewardserve-demo-minilm": {"pairs": 1, "accuracy": 1.0}}
    exported = run_cli("feedback", "export", "--db", str(tmp_path / "feedback.db"), "--out", str(tmp_path / "x.jsonl"))
    assert exported.returncode == 0, exported.stderr
    labeled = [r for r in map(json.loads, (tmp_path / "x.jsonl").read_text().splitlines()) if r.get("source") ==
               "labeling"]
    assert len(labeled) == 1 and labeled[0]["ranking"] == [1, 0]


def _read_json(stream: IO[str]) -> str:
    """The JSON document the command prints first (it keeps running afterwards)."""
    lines = []
    for line in stream:
        lines.append(line)
        if line.rstrip() == "}":
            return "".join(lines)
    raise AssertionError("no JSON on stdout: " + "".join(lines))


def _flag_help(text: str, flag: str) -> str:
    """The help of ``flag`` in ``--help`` output, whitespace collapsed (argparse wraps lines)."""
    flat = " ".join(text.split())
    options = flat[flat.index("options:"):]
    found = re.search(rf" {flag}[ ,]", options)
    assert found, f"{flag} is not in the help"
    rest = options[found.end():]
    following = re.search(r" --(?!no-)[a-z][a-z0-9-]* [A-Z{\[]| --[a-z][a-z0-9-]*, --no-", rest)
    return options[found.start():found.end() + (following.start() if following else len(rest))]


@pytest.mark.parametrize("command", ["serve", "demo", "train"])
def test_help_shows_every_setting_with_its_description_and_one_default(command: str) -> None:
    from service.settings import setting_fields
    from training.config import config_fields

    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    serve_only = ("model", "models_file")
    fields = config_fields() if command == "train" else [f for f in setting_fields() if f[0] not in serve_only or
                                                          command == "serve"]
    for name, default, description, _ in fields:
        text = _flag_help(proc.stdout, "--" + name.replace("_", "-"))
        assert " ".join(description.split()) in text, (name, text)  # e.g. a stray % garbles it
        assert text.count("(default:") == 1, (name, text)
        if command == "demo" and name in DEMO_SERVE:
            assert f"(default: {DEMO_SERVE[name]!r})" in text, (name, text)  # what the demo serves
        elif isinstance(default, bool):
            assert f"(default: {'on' if default else 'off'})" in text, (name, text)
    if command != "train":
        assert "REWARDSERVE_API_KEYS" in proc.stdout or command == "demo"
        assert "--api-keys" not in proc.stdout


def test_export_help_names_real_defaults() -> None:
    proc = run_cli("export", "--help")
    assert proc.returncode == 0
    assert "(default: )" not in proc.stdout and "(default: None)" not in proc.stdout
    assert "(default: fp32,int8)" in " ".join(proc.stdout.split())


def test_serve_refuses_bad_settings_without_echoing_secrets(trained_bert_bundle: Path) -> None:
    proc = run_cli("serve", "--model", str(trained_bert_bundle), "--backend", "torch", "--variant", "int8",
                   env={"REWARDSERVE_API_KEYS": "top-secret-key"})
    assert proc.returncode == 2 and "int8 is an ONNX export" in proc.stderr
    assert "top-secret-key" not in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("serve", "--port", "0")
    assert proc.returncode == 2 and "no model to serve" in proc.stderr
    # onnx named, but not exported: exits, says why (auto would serve the checkpoint on torch)
    proc = run_cli("serve", "--model", str(trained_bert_bundle), "--backend", "onnx", "--port", "0", timeout=120)
    assert proc.returncode == 2 and "no engine can serve" in proc.stderr and "rewardserve export" in proc.stderr
