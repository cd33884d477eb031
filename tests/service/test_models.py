"""Several models per server, against a real server: names and versions, hot swap under load, failed swaps,
traffic splits, shadows, ensembles, and the cores shared between models."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from rewardmodel import read_card
from rewardserve.client import RewardClient
from service.deployment import aggregate
from service.machine import cpu_count
from tests.references import offline
from tests.server import error_of, running

ADMIN = {"Authorization": "Bearer admin-key"}
ITEMS = [("how are you ?", " i am good ."), ("how are you ?", " i am bad ."), ("the sun", " is red !"),
         ("hello", " world")]
BODY = {"items": [{"prompt": p, "completion": c} for p, c in ITEMS]}


def models_file(tmp_path: Path, models: list[dict[str, Any]]) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def test_two_named_models_each_answer_with_their_version_and_the_first_is_the_default(
        bert_onnx_bundle: Path, llama_onnx_bundle: Path) -> None:
    with running(model=(f"bert={bert_onnx_bundle}", f"llama={llama_onnx_bundle}")) as live:
        listed = httpx.get(live.url + "/v1/models").json()["data"]
        versions = {m["id"]: m["version"] for m in listed}
        assert list(versions) == ["bert", "llama"] and len(set(versions.values())) == 2
        assert all(len(v) == 12 for v in versions.values())
        for name, bundle in (("bert", bert_onnx_bundle), ("llama", llama_onnx_bundle)):
            r = httpx.post(live.url + "/score", json={**BODY, "model": name})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == name and r.headers["x-model-version"] == versions[name]
            np.testing.assert_allclose(r.json()["scores"], offline(bundle, ITEMS), atol=1e-5)
        default = httpx.post(live.url + "/rerank", json={"prompt": "how are you ?", "completions": ["a", "b"]})
        assert default.json()["model"] == "bert" and default.headers["x-model-version"] == versions["bert"]
        message = error_of(httpx.post(live.url + "/score", json={**BODY, "model": "nope"}), 404, "model_not_found")
        assert "bert" in message and "llama" in message
        # adapters' clients send names of their own: those are answered by the default model, not a 404
        classify = httpx.post(live.url + "/classify", json={"model": "some-hub/name", "input": "hello world"})
        assert classify.status_code == 200 and classify.json()["model"] == "bert"
        assert httpx.post(live.url + "/classify", json={"model": "llama", "input": "x"}).json()["model"] == "llama"
        with RewardClient(live.url, model="llama") as client:  # the client names the model on every request
            np.testing.assert_allclose(client.score(ITEMS), offline(llama_onnx_bundle, ITEMS), atol=1e-5)
            assert client.rerank("how are you ?", ["a", "b"])["model"] == "llama"
        # per-model series: each version's items are counted under its own labels
        assert live.metric("rewardserve_items_total", model="llama", version=versions["llama"]) == 2 * len(ITEMS) + 3


def test_the_same_bundle_as_fp32_and_int8_is_two_versions_with_their_own_scores(bert_onnx_bundle: Path,
                                                                               tmp_path: Path) -> None:
    path = models_file(tmp_path, [{"name": "fp32", "path": str(bert_onnx_bundle)},
                                  {"name": "int8", "path": str(bert_onnx_bundle), "variant": "int8"}])
    with running(models_file=path) as live:
        answers = {n: httpx.post(live.url + "/score", json={**BODY, "model": n}) for n in ("fp32", "int8")}
        assert answers["fp32"].headers["x-model-version"] != answers["int8"].headers["x-model-version"]
        for variant, r in answers.items():
            np.testing.assert_allclose(r.json()["scores"], offline(bert_onnx_bundle, ITEMS, variant), atol=1e-5)


def test_two_cpu_models_split_the_cores_instead_of_each_taking_all(bert_onnx_bundle: Path,
                                                                   llama_onnx_bundle: Path) -> None:
    with running(model=(f"a={bert_onnx_bundle}", f"b={llama_onnx_bundle}")) as live:
        per_model = max(1, cpu_count() // 2)
        for m in httpx.get(live.url + "/v1/models").json()["data"]:
            assert m["rewardserve"]["threads"] == per_model, m
        for version in live.state.registry.versions():  # what onnxruntime was really given
            session = version.backend._session  # type: ignore[union-attr]
            assert session.get_session_options().intra_op_num_threads == per_model
    with running(model=(str(bert_onnx_bundle),)) as live:  # alone, the library's default (all cores)
        assert httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]["threads"] == 0


def _load(url: str, stop: threading.Event, out: list[tuple[float, float, int, str, list[float]]],
          client_id: int) -> None:
    """Post /score until ``stop``; record (sent, received, status, version, scores) of each answer."""
    with httpx.Client(timeout=60) as client:
        i = 0
        while not stop.is_set():
            sent = time.monotonic()
            r = client.post(url + "/score", json={"items": [{"prompt": ITEMS[i % 4][0], "completion": ITEMS[i % 4][1]},
                                                            {"prompt": "hello", "completion": f" {client_id}"}]})
            body = r.json() if r.status_code == 200 else {}
            out.append((sent, time.monotonic(), r.status_code, r.headers.get("x-model-version", ""),
                        body.get("scores", [])))
            i += 1


@pytest.mark.parametrize("max_wait_ms", [0, 5])
def test_a_swap_under_load_drops_nothing_and_every_answer_comes_from_exactly_one_version(
        bert_onnx_bundle: Path, llama_onnx_bundle: Path, max_wait_ms: float) -> None:
    with running(model=(f"rm={bert_onnx_bundle}",), admin_keys=("admin-key",), max_wait_ms=max_wait_ms) as live:
        old = httpx.post(live.url + "/score", json=BODY).headers["x-model-version"]
        stop, answers = threading.Event(), [list() for _ in range(8)]  # type: ignore[var-annotated]
        clients = [threading.Thread(target=_load, args=(live.url, stop, answers[i], i)) for i in range(8)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        put = httpx.put(live.url + "/admin/models/rm", json={"path": str(llama_onnx_bundle)}, headers=ADMIN,
                        timeout=120)
        swapped_at = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for c in clients:
            c.join(60)
        assert put.status_code == 200, put.text
        new = put.json()["version"]
        assert new != old and put.json()["previous"] == {"version": old, "answered_after_switch": put.json()[
            "previous"]["answered_after_switch"], "released": True}
        flat = [a for per_client in answers for a in per_client]
        assert {status for _, _, status, _, _ in flat} == {200}, Counter(s for _, _, s, _, _ in flat)
        by_version = Counter(v for _, _, _, v, _ in flat)
        assert set(by_version) == {old, new} and min(by_version.values()) > 0, by_version
        # exactly one version scored each request: its scores are that version's, item for item
        expected = {old: bert_onnx_bundle, new: llama_onnx_bundle}
        for client_id, per_client in enumerate(answers):
            for i, (_, _, _, version, scores) in enumerate(per_client):
                item = ITEMS[i % 4]
                want = offline(expected[version], [item, ("hello", f" {client_id}")])
                np.testing.assert_allclose(scores, want, atol=1e-4)
        # the switch is one step: each client sees the old version, then only the new one; nothing sent after
        # the PUT's answer (which comes once the old version is released) reached the old version
        for per_client in answers:
            seen = [v for _, _, _, v, _ in per_client]
            assert seen == sorted(seen, key=lambda v: v == new), seen
        assert all(v == new for sent, _, _, v, _ in flat if sent > swapped_at)
        assert live.metric("rewardserve_model_swaps_total", model="rm", result="ok") == 1
        assert live.metric("rewardserve_model_info", version=old) == 0  # released: its series is gone
        assert live.metric("rewardserve_model_info", version=new) == 1
        # a reload of the same bundle is a swap to the same version: its series stay and keep counting
        again = httpx.put(live.url + "/admin/models/rm", json={"path": str(llama_onnx_bundle)}, headers=ADMIN)
        assert again.status_code == 200 and again.json()["version"] == new
        before = live.metric("rewardserve_items_total", model="rm", version=new)
        assert httpx.post(live.url + "/score", json=BODY).headers["x-model-version"] == new
        assert live.metric("rewardserve_items_total", model="rm", version=new) == before + len(ITEMS)
        assert live.metric("rewardserve_model_info", version=new) == 1


def test_a_failed_swap_keeps_the_old_version_serving_and_says_why(bert_onnx_bundle: Path, llama_onnx_bundle: Path,
                                                                 tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(llama_onnx_bundle, tampered)
    with (tampered / "tokenizer.json").open("a") as f:
        f.write(" ")
    empty = tmp_path / "empty"
    empty.mkdir()
    with running(model=(f"rm={bert_onnx_bundle}",), admin_keys=("admin-key",), variant="int8") as live:
        version = httpx.post(live.url + "/score", json=BODY).headers["x-model-version"]
        put = httpx.put(live.url + "/admin/models/rm", json={"path": str(empty)}, headers=ADMIN)
        assert "keeps serving" in error_of(put, 409, "swap_failed")
        assert "sha256" in error_of(httpx.put(live.url + "/admin/models/rm", json={"path": str(tampered)},
                                            headers=ADMIN), 409, "swap_failed")
        # the entry serves int8, which the llama bundle never exported: the backend's own load fails
        assert "int8" in error_of(httpx.put(live.url + "/admin/models/rm", json={"path": str(llama_onnx_bundle)},
                                            headers=ADMIN), 409, "swap_failed")
        error_of(httpx.put(live.url + "/admin/models/nope", json={"path": str(llama_onnx_bundle)}, headers=ADMIN),
                 404, "model_not_found")
        error_of(httpx.put(live.url + "/admin/models/rm", json={"path": str(llama_onnx_bundle)}), 401, "unauthorized")
        r = httpx.post(live.url + "/score", json=BODY)
        assert r.status_code == 200 and r.headers["x-model-version"] == version
        np.testing.assert_allclose(r.json()["scores"], offline(bert_onnx_bundle, ITEMS, "int8"), atol=1e-5)
        assert live.metric("rewardserve_model_swaps_total", model="rm", result="failed") == 3
    with running(model=(f"rm={bert_onnx_bundle}",)) as live:  # no admin keys: the endpoint is off
        error_of(httpx.put(live.url + "/admin/models/rm", json={"path": str(empty)}), 403, "forbidden")


def test_a_swap_that_would_not_fit_in_memory_is_refused(bert_onnx_bundle: Path, llama_onnx_bundle: Path) -> None:
    with running(model=(f"rm={bert_onnx_bundle}",), admin_keys=("admin-key",), swap_memory_bytes=4096) as live:
        version = httpx.post(live.url + "/score", json=BODY).headers["x-model-version"]
        message = error_of(httpx.put(live.url + "/admin/models/rm", json={"path": str(llama_onnx_bundle)},
                                     headers=ADMIN), 507, "insufficient_memory")
        assert "MiB" in message and "keeps serving" in message
        assert httpx.post(live.url + "/score", json=BODY).headers["x-model-version"] == version


def test_a_split_sends_each_target_its_share_and_keeps_a_session_on_one(bert_onnx_bundle: Path,
                                                                       tmp_path: Path) -> None:
    path = models_file(tmp_path, [
        {"name": "chat", "split": {"v1": 80, "v2": 20}},
        {"name": "v1", "path": str(bert_onnx_bundle)},
        {"name": "v2", "path": str(bert_onnx_bundle), "variant": "int8"}])
    with running(models_file=path) as live:
        one = {"items": BODY["items"][:1]}
        counts: Counter[str] = Counter()
        with httpx.Client() as client:
            for i in range(400):
                r = client.post(live.url + "/score", json=one, headers={"x-session-id": f"session-{i}"})
                counts[r.json()["model"]] += 1
            assert abs(counts["v2"] / 400 - 0.2) < 0.07, counts  # binomial sd 0.02: 3.5 sd
            for i in range(20):  # sticky: a session always lands on the same target
                seen = {client.post(live.url + "/score", json=one, headers={"x-session-id": f"s{i}"}).json()["model"]
                        for _ in range(3)}
                assert len(seen) == 1
        assert live.metric("rewardserve_split_requests_total", model="chat", target="v2") >= counts["v2"]


def test_a_shadow_scores_every_request_but_the_primary_answers(bert_onnx_bundle: Path, llama_onnx_bundle: Path,
                                                              tmp_path: Path) -> None:
    path = models_file(tmp_path, [{"name": "main", "path": str(bert_onnx_bundle), "shadow": "next"},
                                  {"name": "next", "path": str(llama_onnx_bundle)}])
    with running(models_file=path) as live:
        r = httpx.post(live.url + "/score", json=BODY)
        assert r.json()["model"] == "main"
        np.testing.assert_allclose(r.json()["scores"], offline(bert_onnx_bundle, ITEMS), atol=1e-5)
        rerank = httpx.post(live.url + "/rerank", json={"prompt": "how are you ?",
                                                        "completions": [c for _, c in ITEMS]})
        expected = offline(bert_onnx_bundle, [("how are you ?", c) for _, c in ITEMS])
        assert rerank.json()["best_index"] == int(np.argmax(expected))
        deadline = time.monotonic() + 10
        while live.metric("rewardserve_shadow_rank_agreement_count") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.metric("rewardserve_shadow_rank_agreement_count", model="main", shadow="next") == 2
        assert live.metric("rewardserve_shadow_top_match_total", model="main", shadow="next") == 1
        assert live.metric("rewardserve_items_total", model="next") == 2 * len(ITEMS)  # it really scored
        taus = []
        for inputs in (ITEMS, [("how are you ?", c) for _, c in ITEMS]):
            a, b = offline(bert_onnx_bundle, inputs), offline(llama_onnx_bundle, inputs)
            i, j = np.triu_indices(len(inputs), 1)
            taus.append((1 + float(np.mean(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])))) / 2)
        assert live.metric("rewardserve_shadow_rank_agreement_sum", model="main") == pytest.approx(sum(taus),
                                                                                                  abs=1e-6)


@pytest.mark.parametrize("how", ["mean", "min", "uwo"])
def test_an_ensemble_of_differently_formatted_members_returns_the_offline_aggregate(
        bert_onnx_bundle: Path, llama_onnx_bundle: Path, tmp_path: Path, how: str) -> None:
    path = models_file(tmp_path, [{"name": "ens", "members": [str(bert_onnx_bundle), str(llama_onnx_bundle)],
                                   "aggregate": how, "uwo_lambda": 0.5}])
    z = []
    for bundle in (bert_onnx_bundle, llama_onnx_bundle):  # each member formats with its own card
        norm = read_card(bundle).normalization
        assert norm is not None
        z.append((offline(bundle, ITEMS) - norm.mean) / norm.std)
    members = np.asarray(z)
    expected = {"mean": members.mean(0), "min": members.min(0),
                "uwo": members.mean(0) - 0.5 * members.var(0)}[how]
    np.testing.assert_allclose(aggregate(members, how, 0.5), expected)  # type: ignore[arg-type]
    with running(models_file=path) as live:
        r = httpx.post(live.url + "/score", json={**BODY, "details": True})
        assert r.status_code == 200, r.text
        body = r.json()
        np.testing.assert_allclose(body["scores"], expected, atol=1e-4)
        assert body["model"] == "ens" and len(r.headers["x-model-version"]) == 12
        for i, detail in enumerate(body["details"]):
            np.testing.assert_allclose(list(detail["members"].values()), members[:, i], atol=1e-4)
            assert detail["std"] == pytest.approx(members[:, i].std(), abs=1e-4)
        rerank = httpx.post(live.url + "/rerank", json={"prompt": "how are you ?", "completions": ["a", "b"],
                                                        "details": True}).json()
        assert set(rerank["results"][0]["members"]) == {"bert", "llama"}
        assert httpx.post(live.url + "/score", json=BODY).json().get("details") is None
        error_of(httpx.post(live.url + "/score", json={**BODY, "criteria": True}), 400, "no_criteria")
        assert live.metric("rewardserve_ensemble_disagreement_count", model="ens") == 2 * len(ITEMS) + 2
