"""Packed scoring (rewardmodel.torch_packed): every family that packs scores a batch of mixed lengths exactly as
its padded forward does, outputs and read rows, on the kernel CPUs run; the others say why they do not pack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rewardmodel import Formatter, load_tokenizer, pad_batch, read_card
from rewardmodel.torch_model import load_torch_model
from rewardmodel.torch_packed import PackedScorer, why_not_packable
from rewardmodel.torch_packing import kernels_for, padded_sdpa
from tests.helpers import good_bad_rows

PACKS = ["llama3", "qwen2", "qwen3", "mistral", "openrlhf-score", "openrlhf-value-head", "trl", "bert", "armorm",
         "internlm2", "prm", "prm-remote"]
"""Families whose imports pack: decoders (linear heads at positions, gated, reward token, steps; the remote-code
stand-ins build on transformers' Llama and Qwen2) and a BERT encoder."""
PADDED = {"deberta": "attention interface", "roberta": "not one packing reads", "gemma2": "eager attention"}
"""Families scored padded, and a word of why (Gemma 2 soft-caps its logits: transformers loads it eager)."""


def _batch(bundle: Path, rows: int = 7) -> Any:
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    items = [(r["prompt"], r["chosen"] * (1 + i % 3)) for i, r in enumerate(good_bad_rows(rows, seed=3))]
    encoded = formatter.encode_many(items)
    assert len({len(e.input_ids) for e in encoded}) > 2  # lengths differ: there is padding to strip
    return pad_batch(encoded, card.formatting), card


def _module(bundle: Path, remote: bool = False) -> Any:
    module, card = load_torch_model(bundle, trust_remote_code=remote)
    return module, card


@pytest.mark.parametrize("name", PACKS)
def test_packed_scores_equal_padded_ones(zoo: Any, name: str) -> None:
    bundle = zoo.bundle(name)
    module, card = _module(bundle, zoo[name].remote)
    assert why_not_packable(module, card.formatting.max_length) is None
    batch, _ = _batch(bundle)
    inputs = {k: torch.from_numpy(v) for k, v in batch.as_dict().items()}
    with torch.inference_mode():
        padded = module(**inputs)
    scorer = PackedScorer(module)
    assert scorer.kernel == "padded_sdpa"  # the kernel CPUs (and fp32) run
    packed = scorer(batch)
    assert packed.shape == padded.shape
    np.testing.assert_allclose(packed.numpy(), padded.numpy(), rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # the module now runs the registered attention: padded batches unchanged
        np.testing.assert_allclose(module(**inputs).numpy(), padded.numpy(), rtol=1e-5, atol=1e-6)
    if module.why_no_rows() is None:
        with torch.inference_mode():
            _, rows = module.forward_with_rows(**inputs)
        out, packed_rows = scorer.with_rows(batch)
        np.testing.assert_allclose(packed_rows.numpy(), rows.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.numpy(), padded.numpy(), rtol=1e-4, atol=1e-5)


def test_a_native_classifier_bundle_packs_both_ways(trained_bert_bundle: Path, trained_llama_bundle: Path) -> None:
    for bundle in (trained_bert_bundle, trained_llama_bundle):  # rewardserve train's own classifier heads
        module, card = _module(bundle)
        assert card.head.kind == "classifier" and why_not_packable(module, card.formatting.max_length) is None
        batch, _ = _batch(bundle)
        with torch.inference_mode():
            padded = module(**{k: torch.from_numpy(v) for k, v in batch.as_dict().items()})
        np.testing.assert_allclose(PackedScorer(module)(batch).numpy(), padded.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PADDED))
def test_families_that_do_not_pack_say_why(zoo: Any, name: str) -> None:
    module, card = _module(zoo.bundle(name), zoo[name].remote)
    why = why_not_packable(module, card.formatting.max_length)
    assert why is not None and PADDED[name] in why


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_the_padded_kernel_is_each_items_own_attention(causal: bool, kv_heads: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 1, 9, 3]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    q = torch.randn(sum(lengths), 4, 8, generator=gen)
    k, v = (torch.randn(sum(lengths), kv_heads, 8, generator=gen) for _ in range(2))
    out = padded_sdpa(q, k, v, offsets, max(lengths), causal, 0.3)
    for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        # one item alone, its key/value heads shared as transformers' repeat_kv shares them
        kk, vv = (t[lo:hi].repeat_interleave(4 // kv_heads, dim=1).transpose(0, 1) for t in (k, v))
        ref = torch.nn.functional.scaled_dot_product_attention(q[lo:hi].transpose(0, 1), kk, vv, is_causal=causal,
                                                               scale=0.3).transpose(0, 1)
        torch.testing.assert_close(out[lo:hi], ref, rtol=1e-5, atol=1e-6)


def test_an_unknown_kernel_is_refused_with_what_there_is(trained_bert_bundle: Path) -> None:
    module, _ = _module(trained_bert_bundle)
    with pytest.raises(ValueError, match=r"no packed-attention kernel 'nope'.*padded_sdpa"):
        PackedScorer(module, "nope")


def test_the_kernels_tried_are_the_fused_ones_on_cuda_in_half_precision_then_padded_sdpa() -> None:
    assert kernels_for(torch.device("cpu"), torch.bfloat16) == ["padded_sdpa"]
    assert kernels_for(torch.device("cuda"), torch.float32) == ["padded_sdpa"]
    on_gpu = kernels_for(torch.device("cuda"), torch.bfloat16)
    assert on_gpu[-1] == "padded_sdpa" and set(on_gpu) <= {"flash_attn", "torch_varlen", "padded_sdpa"}


def test_one_scorer_packs_batch_after_batch(trained_llama_bundle: Path) -> None:
    """The attention layout is cached for the layers of one forward, never carried into the next batch."""
    module, _ = _module(trained_llama_bundle)
    scorer = PackedScorer(module)
    first, _ = _batch(trained_llama_bundle, rows=7)
    second, _ = _batch(trained_llama_bundle, rows=3)
    for batch in (first, second, first):
        with torch.inference_mode():
            padded = module(**{k: torch.from_numpy(v) for k, v in batch.as_dict().items()})
        np.testing.assert_allclose(scorer(batch).numpy(), padded.numpy(), rtol=1e-4, atol=1e-5)
