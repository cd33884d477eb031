"""Loading base checkpoints as reward models: pad tokens, templates, and the score position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rewardmodel import pad_batch, score_positions
from tests.helpers import WORDS
from training.modeling import PAD_TOKEN, LoadedModel, load_base_model

ITEMS = [("hello world ?", " i am fine ."), ("how are you ?", " good"), ("the cat ?", " it is a red dog , one two .")]


def test_decoder_without_pad_gets_a_dedicated_one(tiny_llama: Path) -> None:
    loaded = load_base_model(str(tiny_llama))
    spec = loaded.formatter.spec
    assert spec.pad_token.token == PAD_TOKEN and spec.pad_token.id == len(WORDS)
    assert loaded.model.config.pad_token_id == len(WORDS)
    assert loaded.model.get_input_embeddings().weight.shape[0] == len(WORDS) + 1
    assert spec.eos_token is not None
    assert (spec.template, spec.score_position, spec.padding_side, spec.suffix_ids) == ("concat", "last", "left",
                                                                                         (spec.eos_token.id,))
    assert loaded.architecture == "decoder"


def test_chat_decoder_records_its_template(tiny_qwen: Path) -> None:
    spec = load_base_model(str(tiny_qwen)).formatter.spec
    assert spec.template == "chat" and spec.chat_template and "<|im_start|>" in spec.chat_template
    assert (spec.padding_side, spec.suffix_ids, spec.bos_token) == ("right", (), None)
    assert spec.pad_token is not None and spec.eos_token is not None
    assert spec.pad_token.token == "<|endoftext|>" != spec.eos_token.token  # its own pad is usable: kept


def test_encoder_reads_the_first_token(tiny_bert: Path) -> None:
    loaded = load_base_model(str(tiny_bert), max_length=1000)
    spec = loaded.formatter.spec
    assert (spec.template, spec.score_position, spec.use_token_type_ids) == ("pair", "first", True)
    assert spec.max_length == 128  # clamped to the model's position embeddings
    assert loaded.architecture == "encoder"


def _scores(loaded: LoadedModel, items: list[tuple[str, str]], side: str) -> np.ndarray:
    from dataclasses import replace

    spec = replace(loaded.formatter.spec, padding_side=side)  # type: ignore[arg-type]
    batch = pad_batch(loaded.formatter.encode_many(items), spec)
    with torch.no_grad():
        out = loaded.model(**{k: torch.from_numpy(v) for k, v in batch.as_dict().items()})
    return out.logits[:, 0].numpy()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen"])
def test_decoder_scores_do_not_depend_on_padding_side(fixture: str, request: pytest.FixtureRequest) -> None:
    loaded = load_base_model(str(request.getfixturevalue(fixture)))
    loaded.model.eval()
    alone = np.array([_scores(loaded, [it], "right")[0] for it in ITEMS])
    np.testing.assert_allclose(_scores(loaded, ITEMS, "right"), alone, atol=1e-5)
    np.testing.assert_allclose(_scores(loaded, ITEMS, "left"), alone, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_decoder_score_is_read_at_the_last_real_token(tiny_qwen: Path, side: str) -> None:
    from dataclasses import replace

    loaded = load_base_model(str(tiny_qwen))
    loaded.model.eval()
    spec = replace(loaded.formatter.spec, padding_side=side)  # type: ignore[arg-type]
    batch = pad_batch(loaded.formatter.encode_many(ITEMS), spec)
    inputs = {k: torch.from_numpy(v) for k, v in batch.as_dict().items()}
    with torch.no_grad():
        hidden = loaded.model.model(**inputs).last_hidden_state
        per_token = loaded.model.score(hidden)[..., 0]
        pooled = loaded.model(**inputs).logits[:, 0]
    cols = torch.from_numpy(score_positions(batch.attention_mask, spec))
    torch.testing.assert_close(pooled, per_token[torch.arange(len(ITEMS)), cols])
    # with right padding the last real tokens sit in different columns: the check is not vacuous
    if side == "right":
        assert len(set(cols.tolist())) == len(ITEMS)


def test_encoder_scores_do_not_depend_on_batching(tiny_bert: Path) -> None:
    loaded = load_base_model(str(tiny_bert))
    loaded.model.eval()
    alone = np.array([_scores(loaded, [it], "right")[0] for it in ITEMS])
    np.testing.assert_allclose(_scores(loaded, ITEMS, "right"), alone, atol=1e-5)
