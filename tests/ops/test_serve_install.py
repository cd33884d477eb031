"""The serving images install ``[serve]`` only: `rewardserve serve` must run with none of the packages of
the ``[train]`` and ``[export]`` extras importable. Here those imports are blocked in a real server process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_ready

BLOCKED = ("torch", "transformers", "accelerate", "datasets", "peft", "safetensors", "onnx", "onnxscript", "nncf")
LAUNCH = """
import sys
from importlib.abc import MetaPathFinder

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ImportError(f"{{name}} is not installed in the serving image")
        return None

sys.meta_path.insert(0, Block())
from rewardserve.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("backend", "variant"), [("onnx", "int8"), ("openvino", "int8-static")])
def test_serve_runs_without_the_training_stack(bert_onnx_bundle: Path, backend: str, variant: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = LAUNCH.format(blocked=set(BLOCKED))
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--model", str(bert_onnx_bundle), "--port",
                             str(port), "--backend", backend, "--variant", variant, "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            wait_ready(url, 60)
        except TimeoutError:
            proc.kill()
            raise AssertionError(proc.communicate()[0]) from None
        r = httpx.post(url + "/score", json={"items": [{"prompt": "q?", "completion": " good"}]})
        assert r.status_code == 200 and len(r.json()["scores"]) == 1
    finally:
        proc.terminate()
        proc.wait(30)
