"""Graceful shutdown of the real `rewardserve serve` process: SIGTERM under load loses no accepted request and
closes no connection on a request; a second signal forces the exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_ready
from tests.server import scrape


def _serve(bundle: Path, port: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port",
                             str(port), "--log-level", "warning"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_under_load_finishes_accepted_requests_then_exits(bert_onnx_bundle: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(bert_onnx_bundle, port, REWARDSERVE_MAX_WAIT_MS="1500")  # settings from the environment
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
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc.wait(60) == 0, proc.stdout.read() if proc.stdout else ""  # a drained exit is a clean exit
        # the drain ran the queued items at once instead of waiting out max_wait_ms
        assert time.monotonic() - started < 1.5 + 1.0
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


def test_sigterm_with_64_kept_alive_clients_answers_every_request_it_reads(bert_onnx_bundle: Path) -> None:
    """Every request sent on an open connection gets an answer: 200 if admitted before the drain, else 503
    draining; every answer after the signal carries Connection: close. Never a connection closed with no
    answer (RemoteProtocolError / ReadError), the failure seen before. Each client posts on its one
    kept-alive connection until an answer says Connection: close, as a client that then goes to another
    replica does (reconnecting to this one in a tight loop would race the listener's close in the kernel,
    which no server can prevent: docs/serving.md's drain section says so)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(bert_onnx_bundle, port)
    outcomes: Counter[str] = Counter()
    closing_answers: Counter[str] = Counter()
    sigterm = threading.Event()
    lock = threading.Lock()
    try:
        wait_ready(url, 60)

        def client(k: int) -> None:
            items = [{"prompt": f"q {k} ?", "completion": f" good {i} {k}"} for i in range(8)]
            with httpx.Client(timeout=60) as http:  # one kept-alive connection, reused while the server allows
                for _ in range(400):
                    try:
                        r = http.post(url + "/score", json={"items": items})
                        kind = f"{r.status_code} {r.json().get('error', {}).get('type', '')}".strip()
                        closes = r.headers.get("connection") == "close"
                    except httpx.HTTPError as exc:
                        kind, closes = f"dropped {type(exc).__name__}", True
                    with lock:
                        outcomes[kind] += 1
                        if closes:
                            closing_answers[kind] += 1
                    if closes:
                        return
                    if sigterm.is_set() and kind != "200":
                        raise AssertionError(f"an answer during the drain without Connection: close: {kind}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while outcomes["200"] < 128:
            assert time.monotonic() < deadline and not outcomes.keys() - {"200"}, outcomes
            time.sleep(0.01)
        sigterm.set()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert proc.wait(60) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert set(outcomes) <= {"200", "503 draining"}, outcomes
    assert sum(closing_answers.values()) == 64, closing_answers  # each client's last answer closed it
    # whether a last answer is a 200 (admitted before the signal) or a 503 (read after it) is the scheduler's
    # timing: on a 2-core CI machine all 64 were 200s. The 503 for a request read while draining is pinned by
    # the next test.


def test_readyz_and_new_requests_answer_draining_and_a_second_signal_forces_the_exit(bert_onnx_bundle: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # a long deadline and a huge backlog keep the first drain busy long enough to look at it
    proc = _serve(bert_onnx_bundle, port, REWARDSERVE_MAX_BATCH_ITEMS="1", REWARDSERVE_MAX_QUEUE_ITEMS="100000",
                  REWARDSERVE_MAX_ITEMS_PER_REQUEST="4096", REWARDSERVE_REQUEST_TIMEOUT_S="600")
    backlog: list[httpx.Response | Exception] = []
    try:
        wait_ready(url, 60)

        def flood() -> None:
            items = [{"prompt": "how are you ?", "completion": f"i am good {i} ."} for i in range(4096)]
            try:
                backlog.append(httpx.post(url + "/score", json={"items": items}, timeout=120))
            except Exception as exc:
                backlog.append(exc)

        flooders = [threading.Thread(target=flood) for _ in range(4)]
        for t in flooders:
            t.start()
        deadline = time.monotonic() + 30
        while scrape(url, "rewardserve_queue_depth_items") < 4000:
            assert time.monotonic() < deadline, "the backlog did not build up"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (ready := httpx.get(url + "/readyz", timeout=5)).status_code == 200:  # the signal is async
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert ready.status_code == 503 and ready.json()["error"]["type"] == "draining"
        assert ready.headers["connection"] == "close"
        late = httpx.post(url + "/score", json={"items": [{"prompt": "q", "completion": "a"}]}, timeout=10)
        assert late.status_code == 503 and late.json()["error"]["type"] == "draining"
        assert httpx.get(url + "/healthz", timeout=5).status_code == 200  # alive while draining
        assert proc.poll() is None, "the first signal drains: the backlog is still being scored"
        forced = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 1
        assert time.monotonic() - forced < 5
        assert "forced exit" in (proc.stdout.read() if proc.stdout else "")
    finally:
        if proc.poll() is None:
            proc.kill()
        for t in flooders:
            t.join(30)
