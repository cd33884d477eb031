"""The reward-hacking monitors: their figures against numpy on known streams, the windows, run eviction, and
what a real server exports for each model, version and x-run-id."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rewardmodel import Normalization
from rewardmodel.metrics import pearson, rankdata
from rewardserve.client import RewardClient
from service.monitors import Monitors, Observed
from tests.cli import run_cli
from tests.references import offline
from tests.server import running


class Clock:
    """A clock the test moves by hand (the 5-minute window is about time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def figures(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """(name without prefix, run, window) → value of every monitor gauge."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.startswith("rewardserve_monitor_") and "window" in s.labels:
                out[(s.name.removeprefix("rewardserve_monitor_"), s.labels["run"], s.labels["window"])] = s.value
    return out


def test_figures_equal_numpy_on_a_known_stream_and_windows_bound_them() -> None:
    registry, clock = CollectorRegistry(), Clock()
    monitors = Monitors(registry, window_items=50, max_runs=4, out_of_range_z=2.0, clock=clock)
    ref = Normalization(mean=1.0, std=2.0)
    rng = np.random.default_rng(0)
    rewards = rng.normal(3.0, 2.0, 80)
    lengths = rng.integers(5, 200, 80)
    texts = [f"reply {i % 30}" for i in range(80)]  # repeats: 30 distinct texts
    truncated = lengths > 150
    for start in range(0, 40, 8):  # the first 40 items, then 6 minutes pass, then 40 more
        sl = slice(start, start + 8)
        monitors.observe("rm", "v1", "ppo", ref, Observed(list(rewards[sl]), list(lengths[sl]), list(truncated[sl]),
                                                          texts[sl]))
    clock.now += 360
    for start in range(40, 80, 8):
        sl = slice(start, start + 8)
        monitors.observe("rm", "v1", "ppo", ref, Observed(list(rewards[sl]), list(lengths[sl]), list(truncated[sl]),
                                                          texts[sl]))
    got = figures(registry)
    for window, sel in (("items", slice(30, 80)), ("5m", slice(40, 80))):  # 50 kept; 40 in the last 5 minutes
        r, n, t = rewards[sel], lengths[sel].astype(float), truncated[sel]
        assert got[("items", "ppo", window)] == len(r)
        assert got[("reward_mean", "ppo", window)] == pytest.approx(r.mean())
        assert got[("reward_std", "ppo", window)] == pytest.approx(r.std())
        assert got[("reward_z_shift", "ppo", window)] == pytest.approx((r.mean() - 1.0) / 2.0)
        assert got[("length_spearman", "ppo", window)] == pytest.approx(pearson(rankdata(r), rankdata(n)))
        assert got[("length_mean", "ppo", window)] == pytest.approx(n.mean())
        assert got[("truncated_ratio", "ppo", window)] == pytest.approx(t.mean())
        assert got[("out_of_range_ratio", "ppo", window)] == pytest.approx((np.abs((r - 1.0) / 2.0) > 2.0).mean())
        distinct = len(set(texts[sel]))
        assert got[("duplicate_ratio", "ppo", window)] == pytest.approx(1 - distinct / len(r))
        assert ("ensemble_disagreement", "ppo", window) not in got  # not an ensemble
    histogram = {s.labels.get("le"): s.value for f in text_string_to_metric_families(generate_latest(registry).decode())
                 for s in f.samples if s.name == "rewardserve_monitor_reward_z_bucket"}
    assert histogram["+Inf"] == 80 and histogram["0.0"] == ((rewards - 1.0) / 2.0 <= 0).sum()


def test_runs_are_evicted_least_recently_used_with_their_series() -> None:
    registry = CollectorRegistry()
    monitors = Monitors(registry, window_items=10, max_runs=2)
    seen = Observed([1.0, 2.0], [3, 4], [False, False], ["a", "b"])
    for run in ("r1", "r2", "", "r1", "r3"):  # r2 is the least recently used run when r3 arrives
        monitors.observe("rm", "v1", run, None, seen)
    runs = {run for _, run, _ in figures(registry)}
    assert runs == {"", "r1", "r3"}  # traffic without a run id is never evicted
    text = generate_latest(registry).decode()
    assert 'run="r2"' not in text and 'run="r3"' in text
    monitors.forget("rm", "v1")
    assert figures(registry) == {} and 'run="r1"' not in generate_latest(registry).decode()


def _monitor(url: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            if s.name == "rewardserve_monitor_" + name and labels.items() <= s.labels.items():
                return s.value
    return None


def test_a_served_model_exports_its_monitors_per_run(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    items = [("how are you ?", " i am good ."), ("how are you ?", " i am bad ."), ("the sun", " is red !"),
             ("hello", " world world world")]
    body = {"items": [{"prompt": p, "completion": c} for p, c in items]}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [
        {"name": "rm", "path": str(bert_onnx_bundle)},
        {"name": "ens", "members": [str(bert_onnx_bundle), str(bert_onnx_bundle)], "variant": "int8"}]}))
    with running(models_file=path) as live:
        for _ in range(3):
            assert httpx.post(live.url + "/score", json=body, headers={"x-run-id": "ppo-7"}).status_code == 200
        with RewardClient(live.url, run_id="grpo-1") as client:  # the client sends x-run-id for the trainer
            client.score_pairs([p for p, _ in items], [c for _, c in items])
        assert httpx.post(live.url + "/score", json=body).status_code == 200
        assert httpx.post(live.url + "/score", json={**body, "model": "ens"}).status_code == 200
        version = httpx.get(live.url + "/v1/models").json()["data"][0]["version"]
        raw = offline(bert_onnx_bundle, items)
        norm = live.state.default.card.normalization
        assert norm is not None
        labels = {"model": "rm", "version": version, "run": "ppo-7", "window": "items"}
        assert _monitor(live.url, "items", **labels) == 12
        assert _monitor(live.url, "items", **{**labels, "run": ""}) == 4
        assert _monitor(live.url, "items", **{**labels, "run": "grpo-1"}) == 4
        assert _monitor(live.url, "reward_mean", **labels) == pytest.approx(raw.mean(), abs=1e-5)
        assert _monitor(live.url, "reward_z_shift", **labels) == pytest.approx((raw.mean() - norm.mean) / norm.std,
                                                                              abs=1e-5)
        assert _monitor(live.url, "duplicate_ratio", **labels) == pytest.approx(1 - 4 / 12)  # the same 4, 3 times
        assert _monitor(live.url, "ensemble_disagreement", model="ens") == pytest.approx(0.0, abs=0.2)
        assert _monitor(live.url, "ensemble_disagreement", model="rm") is None
        # the terminal view reads the same figures
        proc = run_cli("monitor", "--url", live.url, "--window", "items", "--run-id", "ppo-7", "--once")
        assert proc.returncode == 0, proc.stderr
        header, row = proc.stdout.splitlines()[1:3]
        assert header.split()[:4] == ["model", "version", "run", "items"]
        assert row.split()[:4] == ["rm", version, "ppo-7", "12"] and f"{raw.mean():+.3f}" in row
    with running(model=(str(bert_onnx_bundle),), monitors=False) as live:  # off: no monitor series at all
        httpx.post(live.url + "/score", json=body)
        assert "rewardserve_monitor_" not in httpx.get(live.url + "/metrics").text
