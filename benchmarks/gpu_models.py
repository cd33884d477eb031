"""The GPU benchmark's models and items (benchmarks/gpu.py): reward models built from a config with random
weights, directly on the device, nothing downloaded; texts of a given token length.

A speed measurement needs the architecture, not trained weights: a Llama-3.1-8B-shaped sequence classifier
scores as fast as Skywork-Reward-Llama-3.1-8B does. Tokenizers are trained on the synthetic words the items are
made of (a Llama-3-style BPE for the decoders, a WordPiece for the BERT), so an item's length in tokens is
what the benchmark asks for.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imported import llama3_tokenizer

LLAMA_31_8B: dict[str, Any] = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
"""meta-llama/Llama-3.1-8B's config.json (the shape of Skywork-Reward-Llama-3.1-8B)."""
QWEN2_05B: dict[str, Any] = {
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
"""Qwen/Qwen2-0.5B's config.json."""
MINILM_L6: dict[str, Any] = {
    "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 12,
    "vocab_size": 30522, "max_position_embeddings": 512}
"""sentence-transformers/all-MiniLM-L6-v2's config.json (the demo model's backbone)."""
TINY_DECODER: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4000,
                                "max_position_embeddings": 512}
TINY_ENCODER: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "vocab_size": 2000, "max_position_embeddings": 512}
"""``--dry-run``'s stand-ins: the same code paths in seconds on a CPU."""


@dataclass(frozen=True)
class ModelSpec:
    """One model the benchmark serves."""

    name: str
    family: str
    """``llama``, ``qwen2`` or ``bert``."""
    shape: dict[str, Any]


def words(count: int = 3000, seed: int = 0) -> list[str]:
    """Pronounceable pseudo-words: the vocabulary every item is written in."""
    rng = random.Random(seed)
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    return ["".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4)))
            for _ in range(count)]


def sentences(vocabulary: list[str], count: int, seed: int = 1) -> list[str]:
    """``count`` sentences of 8-30 words of ``vocabulary``."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(vocabulary, k=rng.randint(8, 30))).capitalize() + "." for _ in range(count)]


def _wordpiece(texts: list[str], vocab_size: int) -> Any:
    """A BERT-style WordPiece tokenizer (``[CLS] a [SEP] b [SEP]``, token type ids) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                             show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def build(spec: ModelSpec, out: Path, texts: list[str], device: str, dtype: str) -> dict[str, Any]:
    """``spec``'s sequence classifier with random weights, created on ``device`` in ``dtype`` and saved to ``out``
    with its tokenizer; returns what FLOP counts need (reused when ``out`` already holds it)."""
    facts = out / "benchmark.json"
    if facts.is_file():
        return dict(json.loads(facts.read_text()))
    import torch
    import transformers

    if spec.family == "bert":
        tokenizer = _wordpiece(texts, min(spec.shape["vocab_size"], 8000))
        config: Any = transformers.BertConfig(**spec.shape, pad_token_id=tokenizer.pad_token_id)
        cls: Any = transformers.BertForSequenceClassification
    else:
        tokenizer = llama3_tokenizer(texts, vocab_size=min(spec.shape["vocab_size"], 8000))
        kind = "Llama" if spec.family == "llama" else "Qwen2"
        config = getattr(transformers, f"{kind}Config")(**spec.shape, pad_token_id=tokenizer.pad_token_id,
                                                        bos_token_id=tokenizer.bos_token_id,
                                                        eos_token_id=tokenizer.eos_token_id)
        cls = getattr(transformers, f"{kind}ForSequenceClassification")
    config.num_labels = 1
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, dtype))  # created in the dtype: an 8B model never exists in fp32
        try:
            model = cls(config)
        finally:
            torch.set_default_dtype(previous)
    model.config.dtype = dtype
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    result = {"parameters": sum(p.numel() for p in model.parameters()), "non_embedding_parameters":
              sum(p.numel() for p in model.parameters()) - embeddings, "layers": config.num_hidden_layers,
              "attention_width": config.num_attention_heads * (config.hidden_size // config.num_attention_heads),
              "causal": spec.family != "bert", "dtype": dtype}
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    facts.write_text(json.dumps(result))
    return result


def item_flops(facts: dict[str, Any], tokens: int) -> float:
    """Forward FLOPs of one item of ``tokens`` tokens: 2 per weight per token, plus attention's scores and
    weighted sums (4 × width per query-key pair: all pairs for an encoder, the causal half for a decoder)."""
    pairs = tokens * (tokens + 1) / 2 if facts["causal"] else tokens * tokens
    return 2.0 * facts["non_embedding_parameters"] * tokens + 4.0 * facts["layers"] * facts["attention_width"] * pairs


class Corpus:
    """Sentences joined into one text, tokenized once: cutting a window of ``n`` tokens out of it gives a text of
    about ``n`` tokens (a word split at the edges may add one) without tokenizing again."""

    def __init__(self, tokenizer: Any, pool: list[str]) -> None:
        self.text = " ".join(pool)
        self.offsets = tokenizer(self.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def cut(self, tokens: int, rng: random.Random) -> str:
        """A window of ``tokens`` tokens from a random place."""
        start = rng.randrange(0, len(self.offsets) - tokens)
        return self.text[self.offsets[start][0]:self.offsets[start + tokens - 1][1]].strip()
