"""The load tools users run against a live server: the Locust file (both user classes, headless) and the
performance benchmark's aiohttp generator (closed and open loop). Correctness only; speed is what they
measure, in benchmarks/, not here."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import Running, running

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def server(bert_onnx_bundle: Path) -> Iterator[Running]:
    with running(model=bert_onnx_bundle, variant="int8") as live:
        yield live


def test_locustfile_runs_both_users_without_failures(server: Running, hh_data: Path) -> None:
    # find, not import: importing locust monkey-patches this process with gevent, under the live server
    if importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed: pip install -e '.[bench]'")
    # --stop-timeout: at the end of the 4 s each user finishes the request it has in flight, so Locust counts every
    # request the server answered (without it, one answered at the stop was served but not counted)
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(BENCHMARKS / "locustfile.py"), "--host", server.url,
         "--headless", "-u", "4", "-r", "4", "-t", "4s", "--stop-timeout", "10", "--json", "--loglevel", "WARNING"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "REWARDSERVE_DATA": str(hh_data)})
    assert run.returncode == 0, run.stderr[-2000:]
    stats = {s["name"]: s for s in json.loads(run.stdout)}
    for path in ("/rerank", "/score"):  # both user classes ran (Locust spreads users over the classes)
        assert stats[path]["num_requests"] > 0, stats.keys()
        assert stats[path]["num_failures"] == 0, run.stderr[-2000:]
    served = server.metric("rewardserve_requests_total", endpoint="/rerank", code="200")
    assert served == stats["/rerank"]["num_requests"]


def test_load_generator_counts_every_pair_and_paces_the_open_loop(server: Running, hh_data: Path) -> None:
    pytest.importorskip("aiohttp", reason="pip install -e '.[bench]'")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from load import Api, closed_loop, rerank_groups, rerank_open
        from serve_load import _pairs
    finally:
        sys.path.remove(str(BENCHMARKS))
    pairs = _pairs(str(hh_data), 96)
    scored_before = server.metric("rewardserve_items_total")
    pid = os.getpid()  # the server runs in this process (a thread)
    outcome = closed_loop(server.url, pid, Api("rewardserve"), pairs, 8, 4).summary()
    assert outcome["requests"] == 12 and outcome["pairs_per_s"] > 0
    assert server.metric("rewardserve_items_total") - scored_before == 96
    assert outcome["latency_ms_p50"] <= outcome["latency_ms_p99"]
    groups = rerank_groups(pairs, 8)
    assert groups and all(len(candidates) == 8 for _, candidates in groups)
    paced = rerank_open(server.url, pid, Api("rewardserve"), groups, 10.0, 2.0).summary()
    # Poisson arrivals at 10/s for 2 s: ~20 requests, all answered (the tiny model keeps up)
    assert 8 <= paced["requests"] <= 40 and paced["offered_requests_per_s"] == 10.0
