"""The models file and ``--model`` flags: what is accepted, and errors that say what is wrong and where."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.errors import ModelsError
from service.models_file import BundleEntry, EnsembleEntry, SplitEntry, entries_from_flags, read_models_file
from service.registry import pick
from tests.helpers import free_port, wait_ready


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_models_file_reads_every_kind_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    entries = read_models_file(write(tmp_path, {"models": [
        {"name": "a", "path": "bundles/a", "variant": "int8", "threads": 1, "shadow": "e"},
        {"name": "e", "members": ["/abs/s1", "s2"], "aggregate": "uwo", "uwo_lambda": 0.5},
        {"name": "chat", "split": {"a": 9, "e": 1}},
    ]}))
    a, e, chat = entries
    assert isinstance(a, BundleEntry) and a.path == tmp_path / "bundles/a"
    assert a.overrides() == {"variant": "int8", "threads": 1}
    assert isinstance(e, EnsembleEntry) and e.members == (Path("/abs/s1"), tmp_path / "s2")
    assert isinstance(chat, SplitEntry) and chat.sticky_header == "x-session-id"


@pytest.mark.parametrize(("models", "says"), [
    ([{"name": "a"}], "exactly one of 'path'"),
    ([{"name": "a", "path": "x", "members": ["y", "z"]}], "exactly one of 'path'"),
    ([{"name": "a", "path": "x", "variant": "int4"}], "variant"),
    ([{"name": "a", "path": "x", "colour": "red"}], "colour"),
    ([{"name": "a", "path": "x"}, {"name": "a", "path": "y"}], "unique"),
    ([{"name": "s", "split": {"nope": 1}}], "'nope'"),
    ([{"name": "a", "path": "x"}, {"name": "s", "split": {"a": 0}}], "not all zero"),
    ([{"name": "a", "path": "x", "shadow": "a"}], "refers to 'a'"),
    ([{"name": "e", "members": ["only-one"]}], "members"),
    ([{"name": "bad name", "path": "x"}], "name"),
])
def test_a_wrong_models_file_says_what_and_where(tmp_path: Path, models: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ModelsError, match="models") as caught:
        read_models_file(write(tmp_path, {"models": models}))
    assert says in caught.value.message


def test_the_example_models_file_reads_with_home_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    entries = read_models_file(Path(__file__).resolve().parents[2] / "examples" / "models.yaml")
    assert [e.name for e in entries] == ["demo-int8", "demo-fp32", "chat", "seeds"]
    first = entries[0]
    assert isinstance(first, BundleEntry) and first.path == tmp_path / ".cache/rewardserve/demo-minilm"


def test_model_flags_name_bundles_by_name_or_by_card(trained_bert_bundle: Path) -> None:
    named, = entries_from_flags((f"rm={trained_bert_bundle}",))
    assert named.name == "rm"
    bare, = entries_from_flags((str(trained_bert_bundle),))
    assert bare.name == "tiny-bert-rm"
    assert entries_from_flags((str(trained_bert_bundle),), "custom")[0].name == "custom"


def test_a_split_pick_is_sticky_and_follows_the_weights() -> None:
    split = {"a": 3.0, "b": 1.0}
    assert all(pick(split, f"user-{i}") == pick(split, f"user-{i}") for i in range(100))
    share = sum(pick(split, f"user-{i}") == "b" for i in range(4000)) / 4000
    assert abs(share - 0.25) < 0.03
    assert {pick({"a": 0.0, "b": 1.0}, None) for _ in range(50)} == {"b"}


def test_sighup_reloads_an_edited_models_file_and_keeps_serving_when_the_edit_is_wrong(
        bert_onnx_bundle: Path, llama_onnx_bundle: Path, tmp_path: Path) -> None:
    path = write(tmp_path, {"models": [{"name": "rm", "path": str(bert_onnx_bundle)}]})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "rewardserve", "serve", "--models-file", str(path), "--port",
                             str(port), "--log-level", "info"], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []  # the server's log, read as it comes (a reload's outcome is logged, not answered)
    reload_failed = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            if "models file reload failed" in line:
                reload_failed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_ready(url)
        body = {"items": [{"prompt": "how are you ?", "completion": " i am good ."}]}

        def versions() -> dict[str, str | None]:
            return {m["id"]: m["version"] for m in httpx.get(url + "/v1/models").json()["data"]}

        first = versions()["rm"]
        path.write_text(yaml.safe_dump({"models": [{"name": "rm", "path": str(llama_onnx_bundle)},
                                                   {"name": "int8", "path": str(bert_onnx_bundle),
                                                    "variant": "int8"}]}))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while versions().get("int8") is None and time.monotonic() < deadline:
            assert httpx.post(url + "/score", json=body).status_code == 200  # serving throughout
            time.sleep(0.05)
        now = versions()
        assert now["rm"] != first and now["int8"] is not None
        assert httpx.post(url + "/score", json={**body, "model": "int8"}).status_code == 200
        path.write_text("models: [{name: rm}]")  # wrong: the old entries keep serving
        proc.send_signal(signal.SIGHUP)
        assert reload_failed.wait(60), "the failed reload was never logged"  # the reload's end, logged
        assert versions() == now and httpx.post(url + "/score", json=body).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        reader.join(10)
        out = "".join(lines)
        assert "models file reload failed" in out and "exactly one of 'path'" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
