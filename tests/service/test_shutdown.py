"""Graceful shutdown of the real `rewardserve serve` process: SIGTERM under load loses no accepted request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_ready
from tests.server import scrape


def test_sigterm_under_load_finishes_accepted_requests_then_exits(bert_onnx_bundle: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "REWARDSERVE_MAX_WAIT_MS": "1500"}  # settings from the environment, as in a pod
    proc = subprocess.Popen([sys.executable, "-m", "rewardserve", "serve", "--model", str(bert_onnx_bundle),
                             "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(url, 60)
        deadline = time.monotonic() + 60
        results: list[httpx.Response | Exception] = []

        def client(k: int) -> None:
            items = [{"prompt": f"q {k} ?", "completion": f" good {i}"} for i in range(8)]
            try:
                results.append(httpx.post(url + "/score", json={"items": items}, timeout=60))
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        while scrape(url, "rewardserve_inflight_requests") < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scrape(url, "rewardserve_queue_depth_items") > 0, "the load must still be queued at SIGTERM"
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc.wait(60) == 0, proc.stdout.read() if proc.stdout else ""  # a drained exit is a clean exit
        assert len(results) == 6
        for r in results:
            assert isinstance(r, httpx.Response) and r.status_code == 200, r
            assert len(r.json()["scores"]) == 8
        try:
            httpx.get(url + "/healthz", timeout=2)
            raise AssertionError("the server still answers after exiting")
        except httpx.ConnectError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
