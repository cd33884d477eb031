"""The backends on their own: provider choice, scores against the offline path, foreign errors translated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rewardmodel import BundleError, Formatter, load_tokenizer, pad_batch, read_card
from rewardmodel.onnx_model import CPU, CUDA, TENSORRT
from rewardmodel.scoring import one_score_per_row
from service.backends.onnxruntime_backend import OnnxBackend, choose_providers
from service.backends.torch_backend import TorchBackend
from service.errors import BackendFailure

PAIRS = [("how are you ?", " i am good ."), ("the cat ?", " it is a bad dog ."), ("hello", " fine")]


def _batch(bundle: Path, pairs: list[tuple[str, str]] = PAIRS):  # type: ignore[no-untyped-def]
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    return pad_batch(formatter.encode_many(pairs), card.formatting)


def test_provider_choice() -> None:
    assert choose_providers("cpu", True, [TENSORRT, CUDA, CPU]) == [CPU]
    assert choose_providers("cuda", False, [TENSORRT, CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("cuda", True, [TENSORRT, CUDA, CPU]) == [TENSORRT, CUDA, CPU]
    assert choose_providers("cuda", True, [CUDA, CPU]) == [CUDA, CPU]  # TensorRT asked for, not installed
    with pytest.raises(BackendFailure, match="onnxruntime-gpu"):
        choose_providers("cuda", False, [CPU])


def test_onnx_and_torch_backends_agree_with_each_other(bert_onnx_bundle: Path) -> None:
    batch = _batch(bert_onnx_bundle)
    onnx = OnnxBackend(bert_onnx_bundle, read_card(bert_onnx_bundle), "fp32", "cpu", threads=1)
    torch = TorchBackend(bert_onnx_bundle, read_card(bert_onnx_bundle), "fp32", "cpu", threads=1)
    assert (onnx.info.name, onnx.info.device, onnx.info.detail) == ("onnx", "cpu", CPU)
    assert (torch.info.name, torch.info.dtype) == ("torch", "float32")
    onnx_scores, torch_scores = onnx.score(batch), torch.score(batch)
    assert onnx_scores.shape == torch_scores.shape == (3,) and onnx_scores.dtype == np.float64
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
    assert len(set(np.round(onnx_scores, 4))) == 3  # three different inputs, three different scores
    int8 = OnnxBackend(bert_onnx_bundle, read_card(bert_onnx_bundle), "int8", "cpu", threads=1)
    np.testing.assert_allclose(int8.score(batch), onnx_scores, atol=0.25)
    bf16 = TorchBackend(bert_onnx_bundle, read_card(bert_onnx_bundle), "bf16", "cpu", threads=1)
    assert bf16.info.dtype == "bfloat16"
    np.testing.assert_allclose(bf16.score(batch), torch_scores, atol=0.1)
    for backend in (onnx, torch, int8, bf16):
        backend.health()
        backend.close()


def test_foreign_errors_become_backend_failures(bert_onnx_bundle: Path) -> None:
    card = read_card(bert_onnx_bundle)
    batch = _batch(bert_onnx_bundle)
    batch.input_ids[0, 1] = 10**7  # no such token: onnxruntime and torch each raise their own error
    for backend in (OnnxBackend(bert_onnx_bundle, card, "fp32", "cpu"), TorchBackend(bert_onnx_bundle, card, "fp32",
                                                                                    "cpu")):
        with pytest.raises(BackendFailure, match="failed on a batch of"):
            backend.score(batch)
    with pytest.raises(BackendFailure, match="no 'fp16' ONNX variant"):
        OnnxBackend(bert_onnx_bundle, card, "fp16", "cpu")
    with pytest.raises(BackendFailure, match="no CUDA device"):
        TorchBackend(bert_onnx_bundle, card, "fp32", "cuda")


def test_one_score_per_row_names_a_wrong_head() -> None:
    assert one_score_per_row(np.array([[1.0], [2.0]]), 2).tolist() == [1.0, 2.0]
    assert one_score_per_row([3.0], 1).tolist() == [3.0]
    with pytest.raises(BundleError, match="num_labels=1"):
        one_score_per_row(np.zeros((2, 2)), 2)
    with pytest.raises(BundleError, match="3 in"):
        one_score_per_row(np.zeros(2), 3)
