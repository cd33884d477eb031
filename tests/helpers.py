"""Building tiny real models and tokenizers for tests: no downloads, seconds to create."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
)

WORDS = [
    "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system",
    "hello", "world", "how", "are", "you", "i", "am", "fine", "good", "bad", "the", "a", "is", "it", "?", ".",
    ",", ":", "!", "human", "answer", "question", "cat", "dog", "sun", "rain", "tea", "red", "blue", "one", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "ten",
]
VOCAB = {w: i for i, w in enumerate(WORDS)}
SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_CHAT = CHATML.replace("{{ bos_token }}", "")
FILLER = ["how", "are", "you", "the", "a", "cat", "tea", "red", "it", "is", "question"]


def word_tokenizer(chat_template: str | None = None, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over :data:`WORDS`: exact, predictable ids. BOS/EOS, no pad token."""
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", VOCAB["<s>"])]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   padding_side=padding_side)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if chat_template:
        fast.chat_template = chat_template
    return fast


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on :data:`WORDS`, shaped like Qwen2-Instruct's: ChatML, EOS <|im_end|>, no BOS.

    Qwen2's tokenizer class rebuilds itself from the vocab and merges with its own pre-tokenizer, so the
    fixture must be a real byte-level BPE (a word-level vocabulary would come out as garbage).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [" ".join(WORDS[5:]), "\n".join(WORDS[5:]), *(f"{a} {b}" for a in WORDS[5:] for b in WORDS[5:12])]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="right")
    fast.chat_template = QWEN_CHAT
    return fast


def save_tiny_decoder(path: Path, family: str = "llama", chat: bool = False, padding_side: str = "left") -> Path:
    """A 2-layer decoder base checkpoint.

    ``llama``: the word tokenizer (BOS/EOS, no pad token), ChatML if ``chat``. ``qwen2``: the byte-level
    BPE tokenizer with ChatML (pad distinct from EOS, as Qwen2-Instruct ships it).
    """
    tok = bpe_tokenizer() if family == "qwen2" else word_tokenizer(CHATML if chat else None, padding_side)
    common: dict[str, Any] = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  tie_word_embeddings=False)
    torch.manual_seed(0)  # the same tiny model in every run
    model = LlamaModel(LlamaConfig(**common)) if family == "llama" else Qwen2Model(Qwen2Config(**common))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def save_tiny_bert(path: Path, minilm_path: Path) -> Path:
    """A 2-layer BERT base checkpoint with the MiniLM (bert-base-uncased) tokenizer."""
    from transformers import AutoTokenizer

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return path


POSITIVE = ["good", "fine", "hello", "one", "sun"]
NEGATIVE = ["bad", "rain", "blue", "two", "dog"]


def good_bad_rows(n: int, seed: int = 0, chat_every: int = 0) -> list[dict[str, Any]]:
    """A learnable preference set in the word vocabulary: a reply with a POSITIVE word beats one with a NEGATIVE.

    With 25 (positive, negative) word combinations an untrained model, which prefers one word of each
    combination at random, is right about half the time; training must learn the two word classes.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choices(FILLER, k=rng.randint(2, 5))) + " ?"
        body = rng.choices(["it", "is", "a", "the", "three", "four"], k=rng.randint(1, 3))
        at = rng.randint(0, len(body))
        chosen = " ".join([*body[:at], rng.choice(POSITIVE), *body[at:]]) + " ."
        rejected = " ".join([*body[:at], rng.choice(NEGATIVE), *body[at:]]) + " ."
        row: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if chat_every and i % chat_every == 0:
            row["prompt"] = [{"role": "user", "content": prompt}]
        rows.append(row)
    return rows


def user_rows(users: int = 8, pairs: int = 40) -> list[dict[str, Any]]:
    """The good/bad set judged by users with a ``user`` field: u0, u1, … prefer the POSITIVE reply (as a model
    trained on the set does), f0, f1, … the NEGATIVE one (half the users each): data for personal rewards."""
    rows = []
    for u in range(users):
        name = f"{'f' if u % 2 else 'u'}{u // 2}"
        for r in good_bad_rows(pairs, seed=100 + u):
            flip = name.startswith("f")
            rows.append({"prompt": r["prompt"], "chosen": r["rejected"] if flip else r["chosen"],
                         "rejected": r["chosen"] if flip else r["rejected"], "user": name})
    return rows


def until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    """Return once ``condition()`` holds (a metric, a log line, a state the test waits for); fail naming ``what``
    after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.02)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server started as a separate process)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, seconds: float = 120) -> None:
    """Poll ``url``/readyz until it answers 200."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready in {seconds} s")


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH. A developer without it gets a skip that names it; CI
    (``CI=true``, or ``REWARDSERVE_REQUIRE_OPS_TOOLS=1`` as ``tests/full.sh`` sets) installs every tool, so there
    a missing one fails instead of silently skipping its checks."""
    import shutil

    import pytest

    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' or '.join(names)} not installed (tests/full.sh installs it)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def in_ci() -> bool:
    """CI installs every prerequisite, so there a missing one is a failure, not a skip."""
    import os

    return os.environ.get("CI") == "true" or os.environ.get("REWARDSERVE_REQUIRE_OPS_TOOLS") == "1"


def require_module(name: str, hint: str) -> Any:
    """``import name``; when it is missing, skip saying ``hint`` (how to install it), or fail in CI."""
    import importlib

    import pytest

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"{name} cannot be imported ({exc}): {hint}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def thumbs_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The good-vs-bad set as thumbs: one reply per prompt, the good one up or the bad one down, never both."""
    rows = []
    for i, pair in enumerate(good_bad_rows(n, seed)):
        up = i % 2 == 0
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen" if up else "rejected"], "label": up})
    return rows


def rating_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """The good-vs-bad set as ratings on [1, 5]: both replies of a prompt rated (good 4–5, bad 1–2), so the
    ratings of one prompt also make a pair."""
    rng = random.Random(seed + 1000)
    rows = []
    for pair in good_bad_rows(n, seed):
        for key, low in (("chosen", 4), ("rejected", 1)):
            rows.append({"prompt": pair["prompt"], "completion": pair[key], "rating": rng.choice([low, low + 1]),
                         "scale": [1, 5]})
    return rows


def criteria_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Two replies per prompt rated on two independent criteria, 4 or 0 on [0, 4]: ``polite`` (a POSITIVE word
    rather than a NEGATIVE one) and ``complete`` (ends with "." rather than ","). Every fourth prompt comes
    as one row of both replies with per-criterion rankings (a tie when both rate alike) instead."""
    rng = random.Random(seed + 2000)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        prompt = " ".join(rng.choices(FILLER, k=rng.randint(2, 5))) + " ?"
        replies, polite, complete = [], [], []
        for _ in range(2):
            nice, done = rng.random() < 0.5, rng.random() < 0.5
            body = rng.choices(["it", "is", "a", "the", "three", "four"], k=rng.randint(1, 3))
            body.insert(rng.randint(0, len(body)), rng.choice(POSITIVE if nice else NEGATIVE))
            replies.append(" ".join(body) + (" ." if done else " ,"))
            polite.append(3 if nice else 1)
            complete.append(3 if done else 1)
        if replies[0] == replies[1]:
            continue
        if i % 4 == 3:
            rank = lambda v: [0, 1] if v[0] > v[1] else [1, 0] if v[1] > v[0] else [[0, 1]]  # noqa: E731
            rows.append({"prompt": prompt, "completions": replies,
                         "criteria_rankings": {"polite": rank(polite), "complete": rank(complete)}})
            continue
        for j in range(2):
            rows.append({"prompt": prompt, "completion": replies[j], "scale": [0, 4],
                         "criteria": {"polite": polite[j], "complete": complete[j]}})
    return rows
