"""Thumbs and ratings train end to end (tiny models): alone, mixed with pairs, with a learned or fixed bias."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from rewardmodel import Formatter, load_tokenizer, read_card
from rewardmodel.scoring import score_encoded
from rewardmodel.torch_model import load_torch_model, torch_scorer
from rewardserve.evaluate import evaluate_bundle
from tests.helpers import rating_rows, thumbs_rows
from tests.server import running
from training.config import TrainConfig
from training.run import train


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(model: Path, train_data: Path, eval_data: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(model=str(model), train_data=str(train_data), eval_data=str(eval_data), output_dir=str(out),
                learning_rate=3e-3, epochs=4.0, batch_size=16, max_length=64, save_steps=0, logging_steps=5,
                warmup_ratio=0.0, seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()  # type: ignore[arg-type]


def test_thumbs_alone_teach_the_pairs_and_the_learned_bias_goes_in_the_card(
    tiny_bert: Path, good_bad_files: tuple[Path, Path], tmp_path: Path
) -> None:
    thumbs = _write(tmp_path / "thumbs.jsonl", thumbs_rows(192, seed=1))
    held_thumbs = _write(tmp_path / "held-thumbs.jsonl", thumbs_rows(64, seed=2))
    result = train(_config(tiny_bert, thumbs, good_bad_files[1], tmp_path / "b"), progress=False)
    assert result.report.accuracy is not None and result.report.accuracy >= 0.9, result.report
    pointwise = read_card(tmp_path / "b").training["pointwise"]
    assert pointwise["learned"] and pointwise["labels"] == 192 and pointwise["bias"] != 0.0

    on_thumbs = evaluate_bundle(str(tmp_path / "b"), str(held_thumbs), progress=False)
    assert on_thumbs["pairs"] == 0 and on_thumbs["accuracy"] is None
    assert on_thumbs["pointwise"]["thumbs"] == 64 and on_thumbs["pointwise"]["auc"] >= 0.9

    # served over HTTP, the thumbs-trained bundle gives the scores eval computed
    rows = thumbs_rows(4, seed=2)
    model, card = load_torch_model(tmp_path / "b")
    encoded = Formatter(load_tokenizer(tmp_path / "b"), card.formatting).encode_many(
        [(r["prompt"], r["completion"]) for r in rows])
    expected = score_encoded(torch_scorer(model), card.formatting, encoded)
    with running(model=tmp_path / "b", backend="torch") as live:
        served = httpx.post(live.url + "/score", json={"items": [
            {"prompt": r["prompt"], "completion": r["completion"]} for r in rows]}).json()["scores"]
    np.testing.assert_allclose(served, expected, atol=1e-5)


@pytest.mark.parametrize("bias", ["learn", "0.5"])
def test_ratings_mixed_with_pairs_correlate_with_held_out_ratings(
    bias: str, tiny_bert: Path, good_bad_files: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs = [json.loads(line) for line in good_bad_files[0].read_text().splitlines()[:96]]
    mixed = _write(tmp_path / "mixed.jsonl", [*rating_rows(96, seed=1), *thumbs_rows(96, seed=3), *pairs])
    held = _write(tmp_path / "held-ratings.jsonl", rating_rows(48, seed=2))
    result = train(_config(tiny_bert, mixed, held, tmp_path / "b", pointwise_weight=0.5, pointwise_bias=bias),
                   progress=False)
    points = result.report.pointwise
    assert points is not None and points.ratings == 96 and points.thumbs == 0
    assert points.spearman is not None and points.spearman >= 0.7, points
    assert result.report.accuracy is not None and result.report.accuracy >= 0.9  # each prompt's two ratings: a pair
    card = read_card(tmp_path / "b").training["pointwise"]
    assert card["weight"] == 0.5 and card["learned"] == (bias == "learn")
    assert card["bias"] != 0.0 if bias == "learn" else card["bias"] == 0.5
