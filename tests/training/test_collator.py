"""The collator: exact tensors for a pair and a 3-way ranking in one batch."""

from __future__ import annotations

from pathlib import Path

import torch

from rewardmodel import FormatSpec, Formatter, SpecialToken, load_tokenizer, parse_record
from training.collator import RewardCollator, encode_examples

CLS, SEP = 101, 102
HI, HELLO, YES, PLEASE, NO, A, B, C = 7632, 7592, 2748, 3531, 2053, 1037, 1038, 1039


def test_pair_and_ranking_in_one_forward(minilm_path: Path) -> None:
    spec = FormatSpec(template="pair", max_length=32, score_position="first", padding_side="right",
                      pad_token=SpecialToken("[PAD]", 0), use_token_type_ids=True)
    formatter = Formatter(load_tokenizer(minilm_path), spec)
    examples = [
        parse_record({"prompt": "hi", "chosen": "yes please", "rejected": "no", "margin": 0.5}, "x:1"),
        parse_record({"prompt": "hello", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]}, "x:2"),
        # an implicit signal's weak pair (feedback export writes its weight)
        parse_record({"prompt": "hi", "chosen": "yes", "rejected": "no", "weight": 0.25}, "x:3"),
    ]
    features = encode_examples(formatter, examples)
    assert [f["length"] for f in features] == [6 + 5, 5 * 3, 5 + 5]
    batch = RewardCollator(formatter)(features[:2])
    assert torch.equal(batch["input_ids"], torch.tensor([
        [CLS, HI, SEP, YES, PLEASE, SEP],
        [CLS, HI, SEP, NO, SEP, 0],
        [CLS, HELLO, SEP, A, SEP, 0],
        [CLS, HELLO, SEP, B, SEP, 0],
        [CLS, HELLO, SEP, C, SEP, 0],
    ]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1] * 6] + [[1] * 5 + [0]] * 4))
    assert torch.equal(batch["token_type_ids"], torch.tensor([[0, 0, 0, 1, 1, 1]] + [[0, 0, 0, 1, 1, 0]] * 4))
    # ranking [2, 0, 1] of the second example (rows 2..4): c>a, c>b, a>b
    assert batch["better"].tolist() == [0, 4, 4, 2]
    assert batch["worse"].tolist() == [1, 2, 3, 3]
    assert batch["margin"].tolist() == [0.5, 0.0, 0.0, 0.0]
    assert torch.allclose(batch["pair_weight"], torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3]))
    assert batch["input_ids"].dtype == torch.long
    weak = RewardCollator(formatter)(features)
    assert torch.allclose(weak["pair_weight"], torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3, 0.25]))
    assert weak["pair_examples"].item() == 3  # the loss divides by examples, so the weak pair counts a quarter
