"""Nothing acknowledged is lost: ``kill -9`` of a server while clients post, two servers on one
PostgreSQL, and a database that goes away and comes back, all on real processes and real databases."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedback.store import FeedbackStore
from tests.feedback import events
from tests.helpers import free_port, wait_ready
from tests.postgres import Cluster, require_postgres
from tests.server import error_of, running

ITEM = {"prompt": "how are you ?", "completion": " i am good ."}


@contextmanager
def serve(bundle: Path, db: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``rewardserve serve`` as its own process, taking feedback into ``db``."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port",
                             str(port), "--log-level", "warning", "--feedback-db", db],
                            env={**os.environ, "REWARDSERVE_WARMUP": "false"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 60)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


class Writer:
    """A client that posts batches of new events and retries each unanswered batch under the same ids."""

    def __init__(self, name: str, ids: Iterator[int]) -> None:
        self.name = name
        self.ids = ids
        self.acked: list[str] = []
        self.accepted = 0
        self.pending: list[dict[str, Any]] | None = None

    def post(self, url: str) -> bool:
        """Send the pending batch (or a new one); True when it was acknowledged."""
        if self.pending is None:
            self.pending = [events.choice(next(self.ids), annotator=self.name) for _ in range(5)]
        try:
            r = httpx.post(url + "/feedback", json={"events": self.pending}, timeout=10)
        except httpx.TransportError:
            return False  # unanswered: the same batch goes again
        if r.status_code != 200:
            assert r.status_code == 503, r.text  # the only refusal a retry may meet
            return False
        self.acked += [e["id"] for e in self.pending]
        self.accepted += r.json()["accepted"]
        self.pending = None
        return True


def stored_ids(url: str) -> Counter[str]:
    return Counter(s.event.id for s in FeedbackStore(url, must_exist=True).events())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_while_clients_post_loses_no_acknowledged_event(bert_onnx_bundle: Path, tmp_path: Path,
                                                               backend: str, request: pytest.FixtureRequest) -> None:
    db = str(tmp_path / "feedback.db") if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    numbers = itertools.count()
    lock = threading.Lock()

    def next_id() -> Iterator[int]:
        while True:
            with lock:
                n = next(numbers)
            yield n

    writers = [Writer(f"w{i}", next_id()) for i in range(4)]
    with serve(bert_onnx_bundle, db) as (url, proc):
        stop = threading.Event()

        def run(w: Writer) -> None:
            while not stop.is_set():
                w.post(url)

        threads = [threading.Thread(target=run, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(len(w.acked) for w in writers) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-stream: some batches are in flight
        proc.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
    acked_before = sum(len(w.acked) for w in writers)
    assert acked_before >= 200
    with serve(bert_onnx_bundle, db) as (url, _):
        for w in writers:  # after the restart, each client retries what was left unanswered
            while w.pending is not None:
                w.post(url)
    acked = [i for w in writers for i in w.acked]
    stored = stored_ids(db)
    assert set(acked) <= set(stored), "an acknowledged event is missing"
    assert set(stored) <= set(acked), "an event no client saw acknowledged after its retries was stored"
    assert max(stored.values()) == 1
    # every stored event was counted as accepted exactly once: by its first post, or its retry if that post
    # died before its answer (then the retry is the one that stores it, or finds it as a duplicate)
    assert sum(w.accepted for w in writers) <= len(stored)


def test_two_servers_on_one_postgresql_with_eight_writers(bert_onnx_bundle: Path, pg_url: str) -> None:
    with serve(bert_onnx_bundle, pg_url) as (a, _), serve(bert_onnx_bundle, pg_url) as (b, _):
        results: list[tuple[int, dict[str, int]]] = []
        lock = threading.Lock()

        def writer(k: int) -> None:
            for n in range(10):
                # writers k and k+1 share half their ids (same content): the race on one id is real
                batch = [events.choice(((k // 2) * 1000) + n * 10 + j) for j in range(10)]
                url = (a, b)[(k + n) % 2]
                r = httpx.post(url + "/feedback", json={"events": batch}, timeout=30)
                assert r.status_code == 200, r.text
                with lock:
                    results.append((len(batch), r.json()))

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    stored = stored_ids(pg_url)
    assert len(stored) == 4 * 10 * 10 and max(stored.values()) == 1
    assert sum(r["accepted"] for _, r in results) == len(stored)  # each id accepted once, in one process
    assert sum(r["duplicates"] for _, r in results) == len(stored)  # and met once more, by its twin writer


def test_feedback_rides_out_a_database_outage_while_scoring_goes_on(bert_onnx_bundle: Path) -> None:
    cluster = Cluster(require_postgres())
    try:
        cluster.start()
        db = cluster.create_database("outage")
        cluster.stop()  # down before the server starts: the server still starts and scores
        with running(model=bert_onnx_bundle, feedback_db=db) as live:
            r = httpx.post(live.url + "/feedback", json={"events": [events.choice(1)]}, timeout=30)
            error_of(r, 503, "feedback_unavailable")
            assert r.headers["retry-after"] == "2"
            assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200
            assert httpx.get(live.url + "/healthz").status_code == 200  # not a reason to restart the pod
            assert httpx.get(live.url + "/readyz").status_code == 200
            cluster.start()
            r = httpx.post(live.url + "/feedback", json={"events": [events.choice(1)]}, timeout=30)
            assert r.json() == {"accepted": 1, "duplicates": 0}
            cluster.stop()  # goes away while serving: open pooled connections are cut
            error_of(httpx.post(live.url + "/feedback", json={"events": [events.choice(2)]}, timeout=30), 503,
                     "feedback_unavailable")
            assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200
            cluster.start()
            r = httpx.post(live.url + "/feedback", json={"events": [events.choice(2)]}, timeout=30)
            assert r.json() == {"accepted": 1, "duplicates": 0}
            assert live.metric("rewardserve_rejected_total", reason="feedback_unavailable") == 2
        assert stored_ids(db) == Counter({"choice-1": 1, "choice-2": 1})
    finally:
        cluster.remove()
