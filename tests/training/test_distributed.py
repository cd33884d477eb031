"""Multi-process training, proven on CPU: torchrun and accelerate launch run two gloo DDP processes that
split the data (half the steps of one process at the same per-process batch), rank 0 alone writes the
bundle and prints the result, and held-out accuracy matches the one-process run within noise. The data mix
pairs and thumbs, so the learned pointwise bias goes through DDP too."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewardmodel import read_card
from tests.helpers import free_port, thumbs_rows
from training.config import TrainConfig
from training.run import train

REPO = Path(__file__).resolve().parents[2]
TRAIN_ARGS = ("--learning-rate", "3e-3", "--epochs", "4", "--batch-size", "8", "--max-length", "64",
              "--save-steps", "0", "--warmup-ratio", "0", "--seed", "0", "--quiet")


@pytest.fixture(scope="module")
def mixed_data(good_bad_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "train.jsonl"
    path.write_text(good_bad_files[0].read_text() + "".join(json.dumps(r) + "\n" for r in thumbs_rows(96, seed=4)))
    return path


@pytest.fixture(scope="module")
def one_process(tiny_bert: Path, mixed_data: Path, good_bad_files: tuple[Path, Path],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[float, int]:
    """Held-out accuracy and steps of one process at the two processes' total batch (16)."""
    out = tmp_path_factory.mktemp("one") / "b"
    cfg = TrainConfig(model=str(tiny_bert), train_data=str(mixed_data), eval_data=str(good_bad_files[1]),
                      output_dir=str(out), learning_rate=3e-3, epochs=4.0, batch_size=16, max_length=64,
                      save_steps=0, warmup_ratio=0.0, seed=0).validate()
    result = train(cfg, progress=False)
    assert result.report.accuracy is not None
    return result.report.accuracy, result.steps


def _launcher(name: str) -> list[str]:
    port = str(free_port())
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", port]
    # --multi_gpu is accelerate's DDP launcher; without a GPU its processes use gloo on the CPU
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip",
            "127.0.0.1", "--main_process_port", port]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_split_the_data_and_rank_zero_writes_the_bundle(
    launcher: str, tiny_bert: Path, mixed_data: Path, good_bad_files: tuple[Path, Path],
    one_process: tuple[float, int], tmp_path: Path,
) -> None:
    out = tmp_path / "bundle"
    command = [*_launcher(launcher), "-m", "rewardserve", "train", "--model", str(tiny_bert), "--train-data",
               str(mixed_data), "--eval-data", str(good_bad_files[1]), "--output-dir", str(out), *TRAIN_ARGS]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)  # one JSON document: rank 0's alone
    assert done.stderr.count("wrote bundle") == 1, done.stderr[-4000:]

    single_accuracy, single_steps = one_process
    # two ranks of 8 make one step of 16, as one process of 16 does: each rank saw half the data (a rank that
    # trained alone on all of it, as happens when the launcher's processes do not form a group, takes 144)
    assert result["steps"] == single_steps == math.ceil(288 / 16) * 4
    accuracy, n = result["report"]["accuracy"], result["report"]["pairs"]
    pooled = (accuracy + single_accuracy) / 2
    noise = 2 * math.sqrt(max(pooled * (1 - pooled), 1 / n) * 2 / n)  # two standard errors of the difference
    assert accuracy >= 0.9 and abs(accuracy - single_accuracy) <= noise, (accuracy, single_accuracy, noise)
    card = read_card(out)
    assert card.training["pointwise"]["learned"] and card.training["pointwise"]["bias"] != 0.0
    assert card.training["result"]["steps"] == result["steps"]
