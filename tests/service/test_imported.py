"""Reward models rewardserve did not train, served over HTTP with the scores their own code gives: every family from
its plain directory (imported on start, torch fp32) and from its exported bundle (ONNX fp32; int8 through the
parity gate), with the adapters, normalization, hot swap and monitors that serve trained bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rewardmodel import read_card
from rewardmodel.importer import PROBES
from tests.families import BUILDERS, Messages
from tests.server import running

ITEMS: list[tuple[Messages, str]] = [
    *((p.messages, p.completion) for p in PROBES if p.messages[0]["role"] != "system"),
    ([{"role": "user", "content": "how are you ?"}], "i am good .\n\nit is fine ."),
]
"""Conversations every family's template accepts (Gemma's refuses a system turn)."""


def _items(chat: bool) -> list[dict[str, Any]]:
    return [{"prompt": m if chat else m[-1]["content"], "completion": c} for m, c in ITEMS]


def _check_family(url: str, name: str, built: Any) -> None:
    """/score of the family equals its reference path: the reward, a gated model's objectives, a PRM's steps."""
    want = built.references(ITEMS)
    body = {"model": name, "items": _items(built.chat), "normalize": built.normalized,
            "criteria": built.family == "gated-multi-objective"}
    r = httpx.post(url + "/score", json=body, timeout=60)
    assert r.status_code == 200, (name, r.text)
    answer = r.json()
    np.testing.assert_allclose(answer["scores"], want[:, 0], atol=1e-4, err_msg=name)
    if built.family == "gated-multi-objective":
        got = [list(c.values()) for c in answer["criteria"]]
        np.testing.assert_allclose(got, want[:, 1:], atol=1e-4, err_msg=name)
    if built.family == "process-reward":
        for steps, row in zip(answer["step_scores"], want, strict=True):
            assert len(steps) >= 1 and not row[1 + len(steps):].any()
            np.testing.assert_allclose(steps, row[1:1 + len(steps)], atol=1e-4, err_msg=name)
        assert [len(s) for s in answer["step_scores"]][-2:] == [3, 2]  # the solution's steps, the blank-line reply


@pytest.fixture(scope="module")
def every_family(zoo: Any) -> dict[str, Any]:
    return {name: zoo[name] for name in sorted(BUILDERS)}


def test_every_family_serves_its_reference_scores_from_its_plain_directory(every_family: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    models = tuple(f"{name}={built.path}" for name, built in every_family.items())
    with running(model=models, home=tmp_path, trust_remote_code=True, max_batch_tokens=4096, backend="auto") as live:
        listed = {m["id"]: m["rewardserve"] for m in httpx.get(live.url + "/v1/models").json()["data"]}
        for name, built in every_family.items():
            about = listed[name]
            assert (about["backend"], about["variant"], about["family"]) == ("torch", "fp32", built.family), name
            assert Path(about["path"]).parent == tmp_path / "imported"  # imported on start, into the home
            _check_family(live.url, name, built)
        _check_adapters(live.url, every_family)


def _check_adapters(url: str, families: dict[str, Any]) -> None:
    """verl's /classify takes the conversation rendered by the model's template (its BOS written once); Cohere's
    rerank the question and documents of an encoder; both answer the family's reference rewards."""
    from transformers import AutoTokenizer

    llama3 = families["llama3"]
    tokenizer = AutoTokenizer.from_pretrained(llama3.path)
    texts = [tokenizer.apply_chat_template([*m, {"role": "assistant", "content": c}], tokenize=False)
             for m, c in ITEMS]
    r = httpx.post(url + "/classify", json={"model": "llama3", "input": texts})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose([d["probs"][0] for d in r.json()["data"]], llama3.references(ITEMS)[:, 0], atol=1e-4)
    question, replies = ITEMS[0][0], [c for _, c in ITEMS]
    want = families["deberta"].references([(question, c) for c in replies])[:, 0]
    r = httpx.post(url + "/v1/rerank", json={"model": "deberta", "query": question[-1]["content"],
                                             "documents": replies})
    assert r.status_code == 200, r.text
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(replies))], want, atol=1e-4)


def test_exported_families_serve_the_same_scores_on_onnx(every_family: dict[str, Any], zoo: Any) -> None:
    bundles = {name: zoo.exported(name) for name in every_family}
    for name, bundle in bundles.items():
        onnx = read_card(bundle).onnx
        assert onnx["fp32"]["parity_passed"] and onnx["int8"]["parity_passed"], (name, onnx["int8"]["parity"])
        assert onnx["fp32"]["parity"]["max_abs_diff"] <= 1e-4, name
    with running(model=tuple(f"{n}={b}" for n, b in bundles.items()), backend="onnx", variant="fp32",
                 max_batch_tokens=4096) as live:
        for name, built in every_family.items():
            _check_family(live.url, name, built)


def test_openrlhf_normalization_and_its_adapter(zoo: Any, tmp_path: Path) -> None:
    """An OpenRLHF checkpoint: raw by default, OpenRLHF's (r - mean) / std from its config when asked, and
    /get_reward takes the decoded prompt+response OpenRLHF's trainer sends, scored by its own recipe."""
    built = zoo["openrlhf-score"]
    card = read_card(zoo.bundle("openrlhf-score"))
    assert card.normalization is not None
    assert (card.normalization.mean, card.normalization.std) == (0.5, 2.0)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built.path)
    raw = built.references(ITEMS)[:, 0]
    with running(model=(str(built.path),), home=tmp_path, backend="auto") as live:
        plain = httpx.post(live.url + "/score", json={"items": _items(True)}).json()
        np.testing.assert_allclose(plain["scores"], raw, atol=1e-4)
        centred = httpx.post(live.url + "/score", json={"items": _items(True), "normalize": True}).json()
        np.testing.assert_allclose(centred["scores"], (raw - 0.5) / 2.0, atol=1e-4)
        np.testing.assert_allclose(centred["raw_scores"], raw, atol=1e-4)
        queries = [tokenizer.apply_chat_template([*m, {"role": "assistant", "content": c}], tokenize=False)
                   for m, c in ITEMS]
        prompts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m, _ in ITEMS]
        rewards = httpx.post(live.url + "/get_reward", json={"query": queries, "prompts": prompts}).json()
        np.testing.assert_allclose(rewards["rewards"], raw, atol=1e-4)


def test_a_hot_swap_takes_a_plain_directory(zoo: Any, tmp_path: Path) -> None:
    """PUT /admin/models/{name} with a model to import: imported off the event loop, proven, then swapped in."""
    first, second = zoo["bert"], zoo["roberta"]
    with running(model=(f"rm={zoo.bundle('bert')}",), home=tmp_path, admin_keys=("root",), backend="auto") as live:
        before = httpx.post(live.url + "/score", json={"items": _items(False)}).json()["scores"]
        np.testing.assert_allclose(before, first.references(ITEMS)[:, 0], atol=1e-4)
        r = httpx.put(live.url + "/admin/models/rm", json={"path": str(second.path)},
                      headers={"authorization": "Bearer root"}, timeout=120)
        assert r.status_code == 200, r.text
        after = httpx.post(live.url + "/score", json={"items": _items(False)}).json()["scores"]
        np.testing.assert_allclose(after, second.references(ITEMS)[:, 0], atol=1e-4)
        bad = httpx.put(live.url + "/admin/models/rm", json={"path": str(tmp_path / "missing")},
                        headers={"authorization": "Bearer root"})
        assert bad.status_code == 409 and "not a directory" in bad.json()["error"]["message"]


def _samples(url: str, name: str) -> list[float]:
    return [s.value for f in text_string_to_metric_families(httpx.get(url + "/metrics").text) for s in f.samples
            if s.name == name]


def test_monitors_measure_an_imported_model_against_its_first_items(zoo: Any, tmp_path: Path) -> None:
    """No card normalization: the monitors' reference is the baseline window of the first items scored."""
    with running(model=(str(zoo["qwen2"].path),), home=tmp_path, monitor_window_items=10, backend="auto") as live:
        r = httpx.post(live.url + "/score", json={"items": _items(True)})
        assert r.status_code == 200 and len(ITEMS) < 10
        assert _samples(live.url, "rewardserve_monitor_reward_z_shift") == []  # no baseline yet
        for _ in range(2):
            assert httpx.post(live.url + "/score", json={"items": _items(True)}).status_code == 200
        shifts = _samples(live.url, "rewardserve_monitor_reward_z_shift")
        assert shifts and all(np.isfinite(v) for v in shifts)


def test_imports_join_ensembles_and_the_compare_gate(zoo: Any, tmp_path: Path) -> None:
    """``import --reference DATA`` gives a card the normalization ensembles standardize by; two imports then serve
    as one ensemble, and ``rewardserve compare`` gates one against the other on their checkpoints."""
    import json

    from rewardserve.cli import main
    from tests.helpers import good_bad_rows

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in good_bad_rows(32, seed=9)))
    bundles = {}
    for name in ("llama3", "qwen2"):
        bundles[name] = tmp_path / name
        assert main(["import", str(zoo[name].path), "--output-dir", str(bundles[name]), "--reference",
                     str(data)]) == 0
        norm = read_card(bundles[name]).normalization
        assert norm is not None and norm.count == 64 and norm.reference == str(data)
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - name: both\n    members: [{bundles['llama3']}, {bundles['qwen2']}]\n")
    with running(models_file=models, home=tmp_path / "home", backend="auto") as live:
        r = httpx.post(live.url + "/score", json={"items": _items(True), "details": True})
        assert r.status_code == 200, r.text
        standardized = []
        for name in ("llama3", "qwen2"):
            norm = read_card(bundles[name]).normalization
            assert norm is not None
            standardized.append((zoo[name].references(ITEMS)[:, 0] - norm.mean) / norm.std)
        np.testing.assert_allclose(r.json()["scores"], np.mean(standardized, axis=0), atol=1e-4)
    assert main(["compare", "--baseline", str(bundles["qwen2"]), "--candidate", str(bundles["llama3"]), "--data",
                 str(data), "--min-gain", "-1"]) == 0
