"""benchmarks/gpu.py --dry-run: the GPU benchmark's every step on the CPU with tiny models, so that the run on a
GPU machine (minutes, rarely lent) does not fail on a typo; and benchmarks/gpu_wheelhouse.sh's list covers what
the service imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("rl", "grpo", "rerank", "open_50pct", "open_90pct", "naive", "in_process", "parity")


def test_the_dry_run_measures_every_step_of_every_model(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "benchmarks/gpu.py", "--dry-run", "--out", str(tmp_path),
                           "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "gpu-dry-run.json").read_text())
    assert record["device"] == "cpu (dry run)" and record["gemm_tflops"] > 0
    assert set(record["models"]) == {"tiny-llama", "tiny-bert"}
    for name, model in record["models"].items():
        for step in STEPS:
            assert step in model and "error" not in model[step] and "skipped" not in model[step], (name, step)
        assert model["service"]["runtime"]["detail"].endswith("packed (padded_sdpa)"), name
        for profile in ("rl", "grpo", "rerank", "open_50pct", "open_90pct", "naive"):
            row = model[profile]
            assert row["items_per_s"] > 0 and row["tokens_per_s"] > row["items_per_s"] and 0 < row["mfu_vs_gemm"]
            assert row["latency_ms_p99"] >= row["latency_ms_p50"] > 0
        packed = model["in_process"]["packed (padded_sdpa)"]
        assert packed["max_diff_vs_padded"] < 1e-4 and packed["items_per_s"] > 0
        assert model["in_process"]["padded"]["items_per_s"] > 0
        assert model["parity"]["passed_fp16_gate"] and model["parity"]["max_abs_diff"] < 1e-4  # fp32 both sides
        assert model["service_vs_ceiling"] > 0 and model["service_vs_naive"] > 0
        assert model["facts"]["non_embedding_parameters"] > 0 and model["facts"]["causal"] == (name == "tiny-llama")
    table = (tmp_path / "gpu-dry-run.md").read_text()
    assert "| tiny-llama | rl |" in table and "| tiny-bert | in-process padded |" in table


def test_the_wheelhouse_lists_every_third_party_module_the_server_imports_that_the_gpu_image_lacks() -> None:
    """Start-up imports of `rewardserve serve` with the torch backend, less what the GPU image has (KINDS.md's
    package list, as the module names they install): the rest must be in the wheelhouse script."""
    code = ("import sys, rewardserve.cli, service.app, service.server, rewardmodel.importer, "
            "rewardmodel.torch_packed, service.backends.torch_backend, feedback.store; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    image = {"numpy", "torch", "transformers", "tokenizers", "safetensors", "httpx", "httpcore", "anyio", "sniffio",
             "h11", "idna", "certifi", "click", "jinja2", "markupsafe", "yaml", "prometheus_client", "huggingface_hub",
             "typing_extensions", "tqdm", "filelock", "fsspec", "packaging", "regex", "requests", "urllib3",
             "charset_normalizer", "psutil", "aiohttp", "multidict", "yarl", "uvloop", "sympy", "mpmath", "networkx",
             "torchgen", "triton", "pyarrow", "dill", "orjson", "opentelemetry", "pydot", "watchfiles", "hf_xet",
             "cython_runtime"}
    ours = {"rewardserve", "rewardmodel", "service", "feedback", "training", "export"}
    script = (ROOT / "benchmarks" / "gpu_wheelhouse.sh").read_text()
    wheel_modules = {"fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "pydantic_settings", "dotenv",
                     "typing_inspection", "annotated_types", "annotated_doc", "fastapi_offline", "sqlalchemy",
                     "greenlet", "alembic", "mako"}
    assert all(m.replace("_", "-").replace("dotenv", "python-dotenv") in script for m in wheel_modules)
    third_party = {m for m in loaded - ours if not m.startswith("_") and m not in sys.stdlib_module_names}
    assert third_party - image - wheel_modules == set()
