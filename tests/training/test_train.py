"""Real (tiny) training runs: accuracy rises, bundles load, eval reproduces training's report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import set_seed

from rewardmodel import CARD_NAME, DataError, read_card
from rewardmodel.sources import load_examples
from rewardserve.evaluate import evaluate_bundle
from training.config import TrainConfig, build_config, load_config_file
from training.evaluation import evaluate_model
from training.modeling import load_base_model
from training.run import CHECKPOINTS, train


def _config(model: Path, data: tuple[Path, Path], out: Path, **kw: object) -> TrainConfig:
    base = dict(model=str(model), train_data=str(data[0]), eval_data=str(data[1]), output_dir=str(out),
                learning_rate=3e-3, epochs=4.0, batch_size=16, max_length=64, save_steps=0, logging_steps=5,
                warmup_ratio=0.0, seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()  # type: ignore[arg-type]


def _untrained_accuracy(model: Path, heldout: Path) -> float:
    set_seed(0)
    loaded = load_base_model(str(model), max_length=64)
    report, _ = evaluate_model(loaded.model, loaded.formatter, load_examples(str(heldout)), progress=False)
    assert report.accuracy is not None
    return report.accuracy


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_qwen"])
def test_accuracy_rises_and_eval_reproduces_it(
    fixture: str, request: pytest.FixtureRequest, good_bad_files: tuple[Path, Path], tmp_path: Path
) -> None:
    model = request.getfixturevalue(fixture)
    before = _untrained_accuracy(model, good_bad_files[1])
    result = train(_config(model, good_bad_files, tmp_path / "bundle"), progress=False)
    assert before < 0.75 and (result.report.accuracy or 0) >= 0.95, (before, result.report.accuracy)
    assert result.steps == 4 * 12  # 192 examples / 16 per step, 4 epochs

    card = read_card(tmp_path / "bundle")
    assert card.training["result"]["report"]["accuracy"] == result.report.accuracy
    assert card.normalization is not None and card.normalization.std == pytest.approx(result.report.reward_std)
    assert not (tmp_path / "bundle" / CHECKPOINTS).exists()

    again = evaluate_bundle(str(tmp_path / "bundle"), str(good_bad_files[1]), progress=False)
    assert again["accuracy"] == result.report.accuracy
    assert again["mean_margin"] == pytest.approx(result.report.mean_margin, abs=1e-5)
    assert again["reward_mean"] == pytest.approx(result.report.reward_mean, abs=1e-5)


def test_decoder_with_lora_learns_and_saves_a_merged_bundle(
    tiny_llama: Path, good_bad_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg = _config(tiny_llama, good_bad_files, tmp_path / "b", lora_r=8, lora_alpha=16, learning_rate=1e-2, epochs=5.0)
    result = train(cfg, progress=False)
    assert (result.report.accuracy or 0) >= 0.9
    files = read_card(tmp_path / "b").files
    assert "model.safetensors" in files and not any("adapter" in f for f in files)  # merged, plain checkpoint
    assert evaluate_bundle(str(tmp_path / "b"), str(good_bad_files[1]), progress=False)["accuracy"] == \
        result.report.accuracy


def test_resume_continues_from_the_last_checkpoint(
    tiny_bert: Path, good_bad_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.run

    out = tmp_path / "b"
    cfg = _config(tiny_bert, good_bad_files, out, max_steps=6, save_steps=3)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the run dies after its last checkpoint, before the bundle is written

    monkeypatch.setattr(training.run, "evaluate_model", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == ["checkpoint-3", "checkpoint-6"]
    with pytest.raises(DataError, match="not empty"):
        train(cfg, progress=False)
    result = train(replace(cfg, max_steps=9, resume="auto"), progress=False)
    assert result.steps == 9
    assert (out / CARD_NAME).is_file()


def test_config_file_and_flags_layer_over_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.5\nmax_length: 77\n")
    cfg = build_config("demo", load_config_file(path), {"max_length": 99, "output_dir": "o"})
    assert (cfg.learning_rate, cfg.max_length, cfg.train_data, cfg.output_dir) == (0.5, 99, "builtin:demo", "o")
    path.write_text(json.dumps({"learning_rat": 1}))
    with pytest.raises(DataError, match="unknown config keys"):
        load_config_file(path)
    with pytest.raises(DataError, match="no training data"):
        build_config(None, {}, {"model": "m", "output_dir": "o"})
