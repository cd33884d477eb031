"""Batch scoring and onnxruntime sessions of the contract (rewardmodel/scoring.py, onnx_model.py, batching.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rewardmodel import BundleError, EncodedInput, FormatSpec, PaddedBatch, SpecialToken, pad_batch, read_card
from rewardmodel.onnx_model import onnx_scorer, open_session, variant_file
from rewardmodel.scoring import score_encoded

SPEC = FormatSpec(template="pair", max_length=64, score_position="first", padding_side="right",
                  pad_token=SpecialToken("[PAD]", 0))


def _enc(*ids: int) -> EncodedInput:
    return EncodedInput(list(ids), None, 0, len(ids), False)


def test_score_encoded_batches_by_length_and_restores_input_order() -> None:
    seen: list[list[int]] = []

    def lengths(batch: PaddedBatch) -> np.ndarray:
        seen.append(batch.attention_mask.sum(axis=1).tolist())
        return batch.attention_mask.sum(axis=1, keepdims=True).astype(float)  # (rows, 1), as models return

    inputs = [_enc(*[1] * n) for n in (5, 1, 4, 2, 3)]
    assert score_encoded(lengths, SPEC, inputs, batch_size=2).tolist() == [5, 1, 4, 2, 3]
    assert seen == [[1, 2], [3, 4], [5]]  # sorted by length: little padding


def test_score_encoded_refuses_nan_and_a_wrong_shape() -> None:
    with pytest.raises(RuntimeError, match="NaN"):
        score_encoded(lambda b: np.full(len(b.input_ids), np.nan), SPEC, [_enc(1)])
    with pytest.raises(BundleError, match="one score per item"):
        score_encoded(lambda b: np.zeros((len(b.input_ids), 2)), SPEC, [_enc(1), _enc(2)])


def test_pad_batch_rounds_up_and_refuses_nothing() -> None:
    batch = pad_batch([_enc(1, 2, 3), _enc(4)], SPEC, pad_to_multiple_of=4)
    assert batch.input_ids.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]] and batch.padding_ratio == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one item"):
        pad_batch([], SPEC)


def test_pad_batch_never_rounds_past_the_cards_max_length() -> None:
    spec = replace(SPEC, max_length=18)
    assert pad_batch([_enc(*range(1, 18))], spec, pad_to_multiple_of=16).input_ids.shape == (1, 18)
    assert pad_batch([_enc(1, 2, 3)], spec, pad_to_multiple_of=16).input_ids.shape == (1, 16)


def test_sessions_say_what_is_wrong(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    card = read_card(bert_onnx_bundle)
    with pytest.raises(BundleError, match="no 'fp16' ONNX variant"):
        variant_file(bert_onnx_bundle, card, "fp16")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        open_session(broken)
    scorer = onnx_scorer(open_session(variant_file(bert_onnx_bundle, card, "fp32")))
    no_types = PaddedBatch(np.ones((1, 3), dtype=np.int64), np.ones((1, 3), dtype=np.int64), None)
    with pytest.raises(BundleError, match="expects inputs"):  # a BERT graph needs token_type_ids
        scorer(no_types)
