"""A criteria model trains end to end: one output per criterion, each learning its own judgement, the card
recording names, scales and weights, eval reporting each criterion.

The tiny decoder reads its outputs straight off the last token. The tiny BERT reads them off its pooler, a
tanh: on these separable criteria it saturates on the easier one (the final full stop) within an epoch or
two, and both outputs become functions of it (seen at learning rates 3e-4 to 1e-2, hidden sizes 32 and 64)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rewardmodel import DataError, read_card
from rewardmodel.sources import load_examples
from rewardserve.evaluate import evaluate_bundle
from tests.helpers import criteria_rows
from training.config import TrainConfig
from training.run import train


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def criteria_config(model: Path, root: Path, **kw: object) -> TrainConfig:
    train_file = write_rows(root / "train.jsonl", criteria_rows(256, seed=1))
    held = write_rows(root / "held.jsonl", criteria_rows(64, seed=2))
    base = dict(model=str(model), train_data=str(train_file), eval_data=str(held), output_dir=str(root / "b"),
                learning_rate=3e-3, epochs=6.0, batch_size=16, max_length=64, save_steps=0, warmup_ratio=0.0,
                seed=0)
    base.update(kw)
    return TrainConfig(**base).validate()  # type: ignore[arg-type]


def test_each_criterion_learns_its_own_judgement(tiny_llama: Path, tmp_path: Path) -> None:
    cfg = criteria_config(tiny_llama, tmp_path, criteria_weights="polite=0.7,complete=0.3")
    result = train(cfg, progress=False)
    per = result.report.criteria
    assert per is not None and set(per) == {"complete", "polite"}
    for name, figures in per.items():
        assert figures["pairs"] > 0 and figures["accuracy"] >= 0.9, (name, figures)
        assert figures["ratings"] > 0 and figures["spearman"] >= 0.7, (name, figures)
    card = read_card(tmp_path / "b")
    assert card.criteria is not None and card.criteria.names == ("complete", "polite")
    assert card.criteria.weights == {"complete": 0.3, "polite": 0.7}
    assert card.criteria.scales == {"complete": (0.0, 4.0), "polite": (0.0, 4.0)}

    # the two outputs are two judgements: on held-out replies, each follows its own feature only
    from rewardmodel import Formatter, load_tokenizer
    from rewardmodel.scoring import outputs_encoded
    from rewardmodel.torch_model import load_torch_model, torch_scorer

    model, _ = load_torch_model(tmp_path / "b")
    replies = [c for ex in load_examples(cfg.eval_data) for c in ex.completions]
    encoded = Formatter(load_tokenizer(tmp_path / "b"), card.formatting).encode_many([("how ?", r) for r in replies])
    out = outputs_encoded(torch_scorer(model), card.formatting, encoded, width=2)
    complete = np.asarray([r.endswith(".") for r in replies])
    assert np.corrcoef(out[:, 0], complete)[0, 1] > 0.9
    assert abs(np.corrcoef(out[:, 1], complete)[0, 1]) < 0.5  # polite does not read the full stop

    again = evaluate_bundle(str(tmp_path / "b"), cfg.eval_data, progress=False)
    for name, figures in per.items():
        assert again["criteria"][name] == pytest.approx(figures), name  # type: ignore[index]


def test_criteria_settings_are_checked(tiny_llama: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not name=number"):
        train(criteria_config(tiny_llama, tmp_path, criteria_weights="polite"), progress=False)
    with pytest.raises(DataError, match="unknown criteria"):
        train(criteria_config(tiny_llama, tmp_path, criteria_weights="kind=1", overwrite=True), progress=False)
