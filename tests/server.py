"""A real uvicorn server on 127.0.0.1 in a thread, serving a bundle, for tests that talk HTTP to it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.backends import load_backend
from service.settings import ServiceSettings
from service.state import BackendLoader, ServiceState


@dataclass
class Running:
    """A live server: its base URL and its state (for white-box checks such as draining)."""

    url: str
    state: ServiceState

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value scraped from /metrics (0 when absent)."""
        return scrape(self.url, name, **labels)


def scrape(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples (from the server's /metrics) whose labels include ``labels`` (0 when none):
    a metric with a per-model label reads as the server's total unless the test names the model."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


FIXED_ENGINE = {"backend": "onnx", "variant": "fp32"}
"""The engine tests serve with unless they name one: fixed, so a test's scores are onnxruntime fp32's (what the
offline reference computes) and no server start spends seconds timing engines. ``backend="auto"`` is tested on
its own (tests/service/test_autoselect.py, the demo)."""


@contextmanager
def running(wait_ready: bool = True, load: BackendLoader = load_backend, **settings: Any) -> Iterator[Running]:
    """Serve ``ServiceSettings(**settings)`` (with :data:`FIXED_ENGINE`'s backend and variant where not given) on a
    free port until the block ends (``load``: see ``create_app``)."""
    engine = {k: v for k, v in FIXED_ENGINE.items() if k not in settings}
    app = create_app(ServiceSettings(**{"log_level": "warning", **engine, **settings}), load=load)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    state: ServiceState = app.state.service
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.started and (not wait_ready or state.engine is not None or state.load_error):
            break
        time.sleep(0.02)
    else:
        raise TimeoutError("the server did not start in 60 s")
    try:
        yield Running(url, state)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def error_of(r: httpx.Response, status: int, kind: str) -> str:
    """Assert ``r`` is docs/design.md §4's error answer (status, JSON shape, type, request id); return its message."""
    where = f"{r.request.method} {r.request.url.path}"
    assert r.status_code == status, (where, r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, (where, body)
    # one serializer for every error, whichever layer answered (the middleware's 413 once had its own)
    assert r.text == json.dumps(body, ensure_ascii=False, separators=(",", ":")), (where, r.text[:200])
    for timing in ("x-tokenization-time-ms", "x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms"):
        assert float(r.headers[timing]) >= 0, (where, timing)
    assert body["error"]["type"] == kind, (where, body)
    assert r.headers["x-request-id"], where
    return str(body["error"]["message"])
