"""Reliability and security over real HTTP: hostile input, overload, faults, secrets (issue: reliability)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_ready
from tests.server import error_of, running

ITEM = {"prompt": "how are you ?", "completion": " i am good ."}
JSON = {"content-type": "application/json"}


def _no_nan(constant: str) -> None:
    raise AssertionError(f"{constant} in a response")


def _event(**fields: object) -> dict[str, object]:
    return {"id": "e", "prompt": "q", "completions": ["a", "b"], "choice": 0, **fields}


def test_hostile_input_catalogue(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    nan_scores = '{"events": [{"id": "n", "prompt": "q", "completions": ["a", "b"], "choice": 0, ' \
                 '"scores": [NaN, 1], "reward_model": "m"}]}'
    inf_ratings = '{"events": [{"id": "i", "prompt": "q", "completions": ["a", "b"], "ratings": [Infinity, 0], ' \
                  '"scale": [0, 1]}]}'
    feedback: list[tuple[str, dict[str, object], int, str]] = [
        ("/feedback", {"json": {"events": "nope"}}, 422, "validation_error"),
        ("/feedback", {"json": {"events": [_event(id=str(i)) for i in range(1001)]}}, 422, "validation_error"),
        ("/feedback", {"json": {"events": [_event(id="")]}}, 422, "validation_error"),
        ("/feedback", {"json": {"events": [_event(id="x" * 129)]}}, 422, "validation_error"),
        ("/feedback", {"json": {"events": [_event(completions=[str(i) for i in range(65)])]}}, 422,
         "validation_error"),
        ("/feedback", {"json": {"events": [_event(metadata={"x": "y" * 20_000})]}}, 422, "validation_error"),
        ("/feedback", {"content": nan_scores, "headers": JSON}, 422, "validation_error"),
        ("/feedback", {"content": inf_ratings, "headers": JSON}, 422, "validation_error"),
        ("/feedback", {"content": '{"events": [{"id": "d", "metadata": ' + deep + "}]}", "headers": JSON}, 400,
         "invalid_json"),
        ("/feedback", {"content": b'{"events": [{"id": "\xff"}]}', "headers": JSON}, 400, "invalid_json"),
        ("/feedback", {"content": b"{" + b" " * 11_000_000 + b"}", "headers": JSON}, 413, "payload_too_large"),
        ("/feedback", {"json": {"events": [_event(id="big", prompt="x" * 1_000_000)]}}, 200, ""),
        ("/feedback", {"json": {"events": [_event(id="big", prompt="x" * 1_000_000)]}}, 200, ""),  # a duplicate
        ("/feedback", {"json": {"events": [_event(id="big")]}}, 409, "conflict"),
    ]
    cases: list[tuple[str, dict[str, object], int, str]] = [
        ("/score", {"json": {"items": []}}, 400, "invalid_request"),
        ("/score", {"json": {"items": [{"prompt": "", "completion": ""}]}}, 200, ""),
        ("/score", {"json": {"items": "nope"}}, 422, "validation_error"),
        ("/score", {"json": {"items": [{"prompt": ["x"], "completion": "y"}]}}, 422, "validation_error"),
        ("/score", {"json": {"items": [ITEM], "unknown": 1}}, 422, "validation_error"),
        ("/score", {"content": '{"items": ' + deep + "}", "headers": JSON}, 400, "invalid_json"),
        ("/score", {"content": b'{"items": [{"prompt": "\xff\xfe", "completion": "x"}]}', "headers": JSON},
         400, "invalid_json"),
        ("/score", {"content": '{"items": [], "normalize": NaN}', "headers": JSON}, 422, "validation_error"),
        ("/score", {"json": {"items": [{"prompt": "x" * 1_000_000, "completion": "y " * 200_000}]}}, 200, ""),
        ("/score", {"json": {"items": [ITEM] * 100_000}}, 413, "too_many_items"),
        ("/score", {"content": b"{" + b" " * 11_000_000 + b"}", "headers": JSON}, 413, "payload_too_large"),
        ("/rerank", {"json": {"prompt": "q", "completions": ["a", "b"], "top_k": 10**30}}, 200, ""),
        ("/rerank", {"json": {"prompt": "q", "completions": []}}, 400, "invalid_request"),
        ("/v2/rerank", {"json": {"query": "q", "documents": [{"txt": "a"}]}}, 422, "validation_error"),
        ("/v1/rerank", {"json": {"query": "q", "documents": ["a"], "top_n": 10**30}}, 200, ""),
        ("/classify", {"json": {"input": []}}, 400, "invalid_request"),
        ("/classify", {"json": {"input": [1, 2]}}, 422, "validation_error"),
        ("/classify", {"json": {"input": "", "add_special_tokens": False}}, 400, "invalid_input"),  # no tokens
        ("/get_reward", {"json": {"query": ["a"], "prompts": ["a", "b"]}}, 400, "invalid_request"),
        ("/get_reward", {"json": {"query": None}}, 422, "validation_error"),
        *feedback,
    ]
    with running(model=bert_onnx_bundle, max_body_bytes=10 << 20, feedback_db=str(tmp_path / "f.db")) as live:
        for path, kwargs, status, kind in cases:
            r = httpx.post(live.url + path, timeout=60, **kwargs)  # type: ignore[arg-type]
            if status == 200:
                assert r.status_code == 200, (path, r.text[:300])
                json.loads(r.text, parse_constant=_no_nan)  # no NaN/Infinity anywhere in an answer
            else:
                error_of(r, status, kind)
        empty = httpx.post(live.url + "/rerank", json={"prompt": "q", "completions": []})
        assert "'completions' is empty" in error_of(empty, 400, "invalid_request")  # named as the client sent it
        assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200
        assert httpx.post(live.url + "/feedback", json={"events": [_event(id="after")]}).json() == {
            "accepted": 1, "duplicates": 0}


def test_a_nan_producing_input_fails_only_its_own_request(poisoned_bundle: Path) -> None:
    with running(model=poisoned_bundle, backend="torch", max_wait_ms=400) as live:
        with ThreadPoolExecutor(2) as pool:
            bad = pool.submit(httpx.post, live.url + "/score", json={"items": [
                {"prompt": "how are you ?", "completion": " the rain"}]})
            good = pool.submit(httpx.post, live.url + "/score", json={"items": [ITEM]})
            bad_r, good_r = bad.result(), good.result()
        error_of(bad_r, 500, "backend_error")
        assert "NaN" not in bad_r.text.replace("NaN/inf", "")
        assert good_r.status_code == 200
        assert live.metric("rewardserve_batch_size_items_count") == 1  # they shared one batch


def test_overload_sheds_with_429_answers_every_admitted_request_and_recovers(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, max_queue_items=32, max_items_per_request=8, max_wait_ms=20) as live:
        probes: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.is_set():
                probes.append(httpx.get(live.url + "/healthz", timeout=10).status_code)
                time.sleep(0.02)

        def one(k: int) -> httpx.Response:
            items = [{"prompt": f"q {k} ?", "completion": f" good {i} {k}"} for i in range(8)]
            return httpx.post(live.url + "/score", json={"items": items}, timeout=60)

        watcher = threading.Thread(target=probe)
        watcher.start()
        with ThreadPoolExecutor(48) as pool:
            answers = list(pool.map(one, range(96)))
        stop.set()
        watcher.join()
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0, codes
        for a in answers:
            if a.status_code == 429:
                error_of(a, 429, "overloaded")
                assert int(a.headers["retry-after"]) >= 1
            else:
                assert len(a.json()["scores"]) == 8
        assert probes and set(probes) == {200}  # liveness stayed answerable throughout
        assert httpx.post(live.url + "/score", json={"items": [ITEM]}).status_code == 200  # recovered
        assert live.metric("rewardserve_queue_depth_items") == 0


def test_a_slow_client_does_not_hold_up_others(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle) as live:
        finished: list[str] = []

        def trickle():  # a body sent over ~2 s
            yield b'{"items": [{"prompt": "slow", "completion": "'
            for _ in range(10):
                time.sleep(0.2)
                yield b"x"
            yield b'"}]}'

        def slow() -> None:
            r = httpx.post(live.url + "/score", content=trickle(), headers=JSON, timeout=30)
            finished.append(f"slow {r.status_code}")

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 10
        while live.metric("rewardserve_inflight_requests") < 1:  # the slow body is being received
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        for _ in range(5):
            r = httpx.post(live.url + "/score", json={"items": [ITEM]}, timeout=30)
            finished.append(f"fast {r.status_code}")
        thread.join()
        assert finished == ["fast 200"] * 5 + ["slow 200"]


def _serve(bundle: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port",
                             str(port), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    return proc, f"http://127.0.0.1:{port}"


def test_tampered_or_pickled_bundles_are_refused_before_serving(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(bert_onnx_bundle, tampered)
    with (tampered / "onnx" / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    proc, _ = _serve(tampered)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "does not match its sha256" in out and "Traceback" not in out
    pickled = tmp_path / "pickled"
    shutil.copytree(bert_onnx_bundle, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    proc, _ = _serve(pickled, "--backend", "torch")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "safetensors only" in out


def test_keys_and_bodies_never_reach_the_logs(bert_onnx_bundle: Path) -> None:
    proc, url = _serve(bert_onnx_bundle, "--log-level", "debug", "--access-log",
                       env={"REWARDSERVE_API_KEYS": "key-SECRET-1,key-SECRET-2"})
    try:
        wait_ready(url, 60)
        marker = {"items": [{"prompt": "BODY-MARKER-q", "completion": "BODY-MARKER-a"}]}
        assert httpx.post(url + "/score", json=marker, headers={"Authorization": "Bearer key-SECRET-2"}).is_success
        assert httpx.post(url + "/score", json=marker, headers={"Authorization": "Bearer wrong-SECRET-3"}
                          ).status_code == 401
        assert httpx.post(url + "/score", json={"items": []}, headers={"Authorization": "Bearer key-SECRET-1"}
                          ).status_code == 400
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "POST /score" in out  # the access log was on
    assert "SECRET" not in out and "BODY-MARKER" not in out


def test_operational_endpoints_can_be_protected(bert_onnx_bundle: Path) -> None:
    with running(model=bert_onnx_bundle, api_keys="k1", protect_metrics=True, protect_health=True) as live:
        for path in ("/metrics", "/healthz", "/readyz"):
            error_of(httpx.get(live.url + path), 401, "unauthorized")
            assert httpx.get(live.url + path, headers={"Authorization": "Bearer k1"}).status_code == 200
    with running(model=bert_onnx_bundle, api_keys="k1") as live:  # default: open, for probes and Prometheus
        assert all(httpx.get(live.url + p).status_code == 200 for p in ("/metrics", "/healthz", "/readyz"))
