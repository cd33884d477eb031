"""Tiny reward models of every family rewardserve imports, and each family's reference path, written from the
family's model card or own code (not from rewardserve's): the tests compare served scores with these.

Each builder writes a checkpoint directory the way the family ships one: a model built from a config with random
weights (seed fixed), a tokenizer trained here on local text, the family's chat template and special tokens,
and for models with their own code, that code (``tests/remote_code``). ``Built.reference(messages, reply)``
scores one conversation as the family's documented usage does, and returns its output row: the reward (and a
gated model's objectives, a process reward model's steps).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from tests.helpers import WORDS

Messages = list[dict[str, str]]
REMOTE_CODE = Path(__file__).parent / "remote_code"
CORPUS = [
    " ".join(WORDS[5:]),
    "How do I boil an egg? Place the egg in boiling water for nine minutes, then cool it in cold water.",
    "What is 2 + 2? 4. You answer in one word. Name a colour. Blue. hi Hello! How can I help? Tell me a joke.",
    "Why did the chicken cross the road? To get to the other side. Solve 3x + 2 = 14. Subtract 2 from both sides",
    "Écris une phrase en français, s'il te plaît. Voici une phrase : le café est très chaud ☕.",
    "Divide both sides by 3: x = 4. The answer is 4. system user assistant model",
]
SMALL: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False}

LLAMA3_CHAT = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
               "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN3_CHAT = ("{% for m in messages %}{% if m['role'] == 'assistant' and loop.last %}<|im_start|>assistant\n"
              "<think>\n\n</think>\n\n{{ m['content'] }}<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n"
              "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Skywork-Reward v0.2's Gemma-2 template: the BOS removed (its tokenizer adds one), system turns refused
GEMMA_CHAT = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
              "{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
              "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
MISTRAL_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
INTERNLM_CHAT = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class Built:
    """A family's checkpoint directory and its reference path."""

    path: Path
    family: str
    """The family rewardserve's import is expected to find."""
    reference: Callable[[Messages, str], np.ndarray]
    chat: bool = True
    """Prompts are chat messages (else the last user turn's text)."""
    remote: bool = False
    normalized: bool = False
    """The reference path normalizes its reward (OpenRLHF's normalize_reward), as a request's normalize does."""
    many: Callable[[list[tuple[Messages, str]]], np.ndarray] | None = None
    """Scores many conversations at once, where one at a time is slow (OpenRLHF's code runs in a subprocess)."""

    def references(self, items: list[tuple[Messages, str]]) -> np.ndarray:
        """The reference rows of ``items``."""
        return self.many(items) if self.many else np.stack([self.reference(m, c) for m, c in items])


def bpe(specials: list[str], style: str = "bytes", vocab_size: int = 600, unk: str = "<unk>") -> Tokenizer:
    """A BPE trained on :data:`CORPUS`: byte-level (Llama-3, Qwen), ``metaspace`` (Llama-2, Mistral) or
    ``spaces`` (Gemma: spaces become ▁, no pre-tokenizer, so merges may cross a prompt/reply boundary)."""
    tok = Tokenizer(models.BPE(unk_token=None if style == "bytes" else unk))
    alphabet: list[str] = []
    if style == "bytes":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Replace("▁", " ")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def with_bos(tok: Tokenizer, bos: str) -> Tokenizer:
    """The tokenizer's single-text template adds ``bos`` (Llama, Gemma, Mistral tokenizers do)."""
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def fast(tok: Tokenizer, chat_template: str | None, **specials: str) -> PreTrainedTokenizerFast:
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    out.chat_template = chat_template
    return out


def save(path: Path, model: Any, tokenizer: Any) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def sharpen(path: Path, remote: bool = False, steps: int = 60) -> None:
    """Train the checkpoint in ``path`` briefly and save it back: Bradley-Terry on the good-vs-bad word pairs,
    through the scoring spec rewardserve derives for it. A model with random weights scores every reply about
    alike, so int8 rounding reorders its pairs at random; a little training gives its scores a spread that the
    int8 parity gate can be asked to keep."""
    from rewardmodel.batching import pad_batch
    from rewardmodel.families import ImportOptions
    from rewardmodel.formatting import Formatter
    from rewardmodel.importer import backend_tokenizer, check_files, open_checkpoint
    from rewardmodel.torch_heads import ScoringModule
    from tests.helpers import good_bad_rows

    options = ImportOptions(trust_remote_code=remote)
    family, ckpt = open_checkpoint(path, check_files(path), options, "cpu")
    derived = family.derive(ckpt, options)
    formatter = Formatter(backend_tokenizer(ckpt), derived.formatting)
    module = ScoringModule(ckpt.model, derived.head).train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    rows = good_bad_rows(steps * 8, seed=3)
    torch.manual_seed(0)
    for step in range(steps):
        batch = rows[step * 8:(step + 1) * 8]
        prompts = [[{"role": "user", "content": r["prompt"]}] if derived.chat else r["prompt"] for r in batch]
        encoded = formatter.encode_many([(p, r[k]) for k in ("chosen", "rejected") for p, r in zip(prompts, batch,
                                                                                                   strict=True)])
        padded = pad_batch(encoded, derived.formatting)
        rewards = module(**{k: torch.from_numpy(v) for k, v in padded.as_dict().items()})[:, 0]
        loss = -torch.nn.functional.logsigmoid(rewards[:len(batch)] - rewards[len(batch):]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ckpt.model.eval().save_pretrained(path)


def row(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _classifier_reference(path: Path) -> Callable[[Messages, str], np.ndarray]:
    """Skywork-Reward's model card: the chat template as text, its BOS dropped, the tokenizer adds one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def score(messages: Messages, reply: str) -> np.ndarray:
        text: str = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": reply}],
                                                  tokenize=False)  # type: ignore[assignment]
        if tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token):
            text = text[len(tokenizer.bos_token):]
        with torch.no_grad():
            return row(model(**tokenizer(text, return_tensors="pt")).logits[0][0])

    return score


def decoder_classifier(path: Path, kind: str) -> Built:
    """Skywork-style decoder classifiers: ``llama3`` (the template writes a BOS and the tokenizer adds one),
    ``qwen2`` and ``qwen3`` (ChatML, no BOS), ``gemma2`` (no BOS in the template, the tokenizer adds one, merges
    across turns), ``mistral`` (Llama-2 style tokenizer, no pad id: read at the last token)."""
    import transformers

    if kind == "llama3":
        specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|pad|>"]
        tok = fast(with_bos(bpe(specials), "<|begin_of_text|>"), LLAMA3_CHAT, bos_token="<|begin_of_text|>",
                   eos_token="<|eot_id|>", pad_token="<|pad|>")
        config: Any = transformers.LlamaConfig(**SMALL)
        cls: Any = transformers.LlamaForSequenceClassification
    elif kind in ("qwen2", "qwen3"):
        tok = fast(bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]), CHATML if kind == "qwen2" else QWEN3_CHAT,
                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
        config = (transformers.Qwen2Config if kind == "qwen2" else transformers.Qwen3Config)(**SMALL)
        cls = transformers.Qwen2ForSequenceClassification if kind == "qwen2" else \
            transformers.Qwen3ForSequenceClassification
    elif kind == "gemma2":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        tok = fast(with_bos(bpe(specials, "spaces"), "<bos>"), GEMMA_CHAT, bos_token="<bos>", eos_token="<eos>",
                   pad_token="<pad>", unk_token="<unk>")
        config = transformers.Gemma2Config(**SMALL, head_dim=8)
        cls = transformers.Gemma2ForSequenceClassification
    else:
        tok = fast(with_bos(bpe(["<unk>", "<s>", "</s>"], "metaspace"), "<s>"), MISTRAL_CHAT, bos_token="<s>",
                   eos_token="</s>", unk_token="<unk>")
        config = transformers.MistralConfig(**SMALL)
        cls = transformers.MistralForSequenceClassification
    config.vocab_size, config.num_labels = len(tok), 1
    config.pad_token_id, config.bos_token_id, config.eos_token_id = tok.pad_token_id, tok.bos_token_id, \
        tok.eos_token_id
    torch.manual_seed(0)
    save(path, cls(config), tok)
    sharpen(path)
    return Built(path, "decoder-classifier", _classifier_reference(path))


def encoder_classifier(path: Path, kind: str, minilm_path: Path | None = None) -> Built:
    """OpenAssistant-style encoder classifiers on a (question, answer) pair: ``deberta`` (DeBERTa-v2, no token
    types, a SentencePiece-style tokenizer), ``bert`` (MiniLM's tokenizer), ``roberta`` (byte-level BPE)."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    small = {k: SMALL[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "max_position_embeddings")}
    if kind == "deberta":
        raw = bpe(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "metaspace", unk="[UNK]")
        raw.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))])
        tok: Any = fast(raw, None, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                        mask_token="[MASK]")
        tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
        config: Any = transformers.DebertaV2Config(**small, type_vocab_size=0, pooler_hidden_act="gelu",
                                                   pooler_dropout=0)
        cls: Any = transformers.DebertaV2ForSequenceClassification
    elif kind == "bert":
        assert minilm_path is not None
        tok = AutoTokenizer.from_pretrained(minilm_path)
        config = transformers.BertConfig(**small)
        cls = transformers.BertForSequenceClassification
    else:
        raw = bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        sep, cls_id = raw.token_to_id("</s>"), raw.token_to_id("<s>")
        assert sep is not None and cls_id is not None
        raw.post_processor = processors.RobertaProcessing(("</s>", sep), ("<s>", cls_id))
        tok = fast(raw, None, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
        tok.model_input_names = ["input_ids", "attention_mask"]
        config = transformers.RobertaConfig(**{**small, "max_position_embeddings": 260}, pad_token_id=1)
        cls = transformers.RobertaForSequenceClassification
    config.vocab_size, config.num_labels = len(tok), 1
    torch.manual_seed(0)
    save(path, cls(config), tok)
    sharpen(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def score(messages: Messages, reply: str) -> np.ndarray:  # OpenAssistant's model card
        inputs = tokenizer(messages[-1]["content"], reply, return_tensors="pt")
        with torch.no_grad():
            return row(model(**inputs).logits[0])

    return Built(path, "encoder-classifier", score, chat=False)


def _remote(path: Path, source: str, class_name: str, config: Any, auto: str, tok: Any,
            pattern: list[int] | None = None) -> Any:
    """A model of a test's remote code: the code written into ``path`` and registered in the config's auto_map."""
    code = (REMOTE_CODE / source).read_text()
    if pattern is not None:
        code = code.replace("token_pattern: list[int] = []", f"token_pattern: list[int] = {pattern}")
    path.mkdir(parents=True, exist_ok=True)
    (path / source).write_text(code)
    spec = importlib.util.spec_from_file_location(f"remote_{path.name}_{source[:-3]}", path / source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config.auto_map = {auto: f"{source[:-3]}.{class_name}"}
    torch.manual_seed(0)
    model = getattr(module, class_name)(config)
    save(path, model, tok)
    (path / source).write_text(code)  # save_pretrained does not copy code it did not load
    return model


def gated(path: Path) -> Built:
    """ArmoRM-style: its own code (trust_remote_code), objectives, a gate at the assistant header, a transform."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "[PAD]"]
    tok = fast(bpe(specials), LLAMA3_CHAT, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="[PAD]")
    pattern = tok.encode("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)
    gating: dict[str, Any] = {"num_objectives": 5, "gating_temperature": 10, "gating_hidden_dim": 16,
                              "gating_n_hidden": 2}
    config = transformers.LlamaConfig(**SMALL, vocab_size=len(tok), pad_token_id=tok.pad_token_id, **gating)
    model = _remote(path, "armo_modeling.py", "LlamaForRewardModelWithGating", config,
                    "AutoModelForSequenceClassification", tok, pattern)
    with torch.no_grad():  # a transform and scale of its own, to be read from the checkpoint, not assumed
        model.reward_transform_matrix.copy_(torch.randn(5, 5))
        model.gating.logit_scale.fill_(1.7)
    save(path, model, tok)
    sharpen(path, remote=True)
    loaded = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def score(messages: Messages, reply: str) -> np.ndarray:  # ArmoRM's model card
        ids = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": reply}], return_tensors="pt",
                                            return_dict=True)["input_ids"]  # type: ignore[call-overload,index]
        with torch.no_grad():
            out = loaded(ids)
        return np.concatenate([row(out.score), row(out.rewards[0])])

    return Built(path, "gated-multi-objective", score, remote=True)


def reward_token(path: Path) -> Built:
    """internlm2-reward-style: its own code, a reward token appended, ``v_head`` read there."""
    import transformers
    from transformers import AutoModel, AutoTokenizer

    raw = bpe(["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|reward|>"])
    tok = fast(with_bos(raw, "<s>"), INTERNLM_CHAT, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    extra: dict[str, Any] = {"reward_token_id": tok.convert_tokens_to_ids("<|reward|>")}
    config = transformers.LlamaConfig(**SMALL, vocab_size=len(tok), pad_token_id=tok.pad_token_id, **extra)
    _remote(path, "internlm_modeling.py", "InternLM2StyleForRewardModel", config, "AutoModel", tok)
    sharpen(path, remote=True)
    loaded = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def score(messages: Messages, reply: str) -> np.ndarray:  # internlm2-reward's model card
        return row(loaded.get_score(tokenizer, [*messages, {"role": "assistant", "content": reply}]))

    return Built(path, "reward-token", score, remote=True)


def process_reward(path: Path, remote: bool = False, max_steps: int = 64) -> Built:
    """Qwen2.5-Math-PRM-style: a token classifier whose step tags (``<extra_0>``) carry the step rewards; ``remote``:
    its own code, with Qwen2.5-Math-PRM's two-layer head, loaded by ``AutoModel``."""
    import transformers
    from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

    tok = fast(bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]), CHATML, eos_token="<|im_end|>",
               pad_token="<|endoftext|>")
    config = transformers.Qwen2Config(**SMALL, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    config.num_labels = 2
    if remote:
        _remote(path, "prm_modeling.py", "Qwen2ForProcessRewardModel", config, "AutoModel", tok)
    else:
        torch.manual_seed(0)
        save(path, transformers.Qwen2ForTokenClassification(config), tok)
    sharpen(path, remote)
    loader: Any = AutoModel if remote else AutoModelForTokenClassification
    model = loader.from_pretrained(path, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    step = tokenizer.encode("<extra_0>")[0]

    def score(messages: Messages, reply: str) -> np.ndarray:  # Qwen2.5-Math-PRM's model card, min over the steps
        content = "<extra_0>".join(reply.split("\n\n")) + "<extra_0>"
        text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": content}], tokenize=False)
        ids = tokenizer.encode(text, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=ids)[0][0], dim=-1)[:, 1]
        steps = probs[ids[0] == step].numpy()
        out = np.zeros(1 + max_steps)
        out[0], out[1:1 + len(steps)] = steps.min(), steps
        return out

    return Built(path, "process-reward", score, remote=remote)


def openrlhf(path: Path, prefix: str, chat: bool, normalize: bool, mean: float = 0.5, std: float = 2.0) -> Built:
    """A checkpoint written by OpenRLHF's own code (head ``prefix``, ``mean``/``std`` in its config), scored by
    OpenRLHF's own dataset recipe and model (:mod:`tests.openrlhf_reference`)."""
    import transformers

    base = path.with_name(path.name + "-base")
    raw = bpe(["<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    tok = fast(with_bos(raw, "<s>"), CHATML if chat else None, bos_token="<s>", eos_token="</s>")
    config = transformers.LlamaConfig(**SMALL, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    save(base, transformers.LlamaForCausalLM(config), tok)
    run_openrlhf(["build", str(base), str(path), prefix, str(mean), str(std)])
    tok.save_pretrained(path)
    shutil.rmtree(base)
    sharpen(path)

    def many(items: list[tuple[Messages, str]]) -> np.ndarray:
        return np.asarray([[r] for _, r in openrlhf_scores(path, items, normalize, chat)])

    return Built(path, "openrlhf", lambda m, c: many([(m, c)])[0], chat=chat, normalized=normalize, many=many)


def run_openrlhf(args: list[str], stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "tests.openrlhf_reference", *args], input=stdin, text=True,
                          capture_output=True, cwd=Path(__file__).parents[1], timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def openrlhf_scores(path: Path, items: list[tuple[Messages, str]], normalize: bool, chat: bool
                    ) -> list[tuple[list[int], float]]:
    """(ids, reward) of each item, by OpenRLHF's own code."""
    out = json.loads(run_openrlhf(["score", str(path), "1" if normalize else "0", "1" if chat else "0"],
                                  json.dumps(items)).strip().splitlines()[-1])
    return [(ids, float(r)) for ids, r in out]


def trl_trained(path: Path, steps: int = 2) -> Built:
    """TRL's RewardTrainer output: a tiny Llama trained a few steps on conversations, pad = EOS (the tokenizer
    has no pad), saved by the trainer; the reference tokenizes as TRL does (``apply_chat_template``)."""
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    base = path.with_name(path.name + "-base")
    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    tok = fast(with_bos(bpe(specials), "<|begin_of_text|>"), LLAMA3_CHAT, bos_token="<|begin_of_text|>",
               eos_token="<|eot_id|>")
    config = transformers.LlamaConfig(**SMALL, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    save(base, transformers.LlamaForCausalLM(config), tok)
    prompts = [[{"role": "user", "content": q}] for q in ("How do I boil an egg?", "What is 2 + 2?")] * 4
    data = Dataset.from_dict({"prompt": prompts,
                              "chosen": [[{"role": "assistant", "content": "Place the egg in boiling water."}]] * 8,
                              "rejected": [[{"role": "assistant", "content": "no idea"}]] * 8})
    args = RewardConfig(output_dir=str(path), per_device_train_batch_size=4, max_steps=steps, report_to=[],
                        save_strategy="no", use_cpu=True, logging_steps=100, disable_tqdm=True)
    trainer = RewardTrainer(model=str(base), args=args, train_dataset=data)
    trainer.train()
    trainer.save_model(str(path))
    shutil.rmtree(base)
    sharpen(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.pad_token_id == tokenizer.eos_token_id  # TRL's pad = EOS

    def score(messages: Messages, reply: str) -> np.ndarray:  # TRL's own tokenization of a conversation
        ids = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": reply}], tokenize=True,
                                            return_dict=True)["input_ids"]  # type: ignore[call-overload,index]
        with torch.no_grad():
            return row(model(input_ids=torch.tensor([ids])).logits[0])

    return Built(path, "trl", score)


BUILDERS: dict[str, Callable[[Path, Path], Built]] = {
    "llama3": lambda p, _: decoder_classifier(p, "llama3"),
    "qwen2": lambda p, _: decoder_classifier(p, "qwen2"),
    "qwen3": lambda p, _: decoder_classifier(p, "qwen3"),
    "gemma2": lambda p, _: decoder_classifier(p, "gemma2"),
    "mistral": lambda p, _: decoder_classifier(p, "mistral"),
    "openrlhf-score": lambda p, _: openrlhf(p, "score", chat=True, normalize=False),
    "openrlhf-value-head": lambda p, _: openrlhf(p, "value_head", chat=False, normalize=True),
    "trl": lambda p, _: trl_trained(p),
    "deberta": lambda p, _: encoder_classifier(p, "deberta"),
    "bert": lambda p, minilm: encoder_classifier(p, "bert", minilm),
    "roberta": lambda p, _: encoder_classifier(p, "roberta"),
    "armorm": lambda p, _: gated(p),
    "internlm2": lambda p, _: reward_token(p),
    "prm": lambda p, _: process_reward(p),
    "prm-remote": lambda p, _: process_reward(p, remote=True),
}
"""Every family the import proves, by the name tests use for it."""


class Zoo:
    """The families' checkpoints, built on first use; their imports and exports, made once."""

    def __init__(self, root: Path, minilm: Path) -> None:
        self.root = root
        self.minilm = minilm
        self._built: dict[str, Built] = {}
        self._bundles: dict[str, Path] = {}
        self._exported: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Built:
        if name not in self._built:
            self._built[name] = BUILDERS[name](self.root / name, self.minilm)
        return self._built[name]

    def bundle(self, name: str) -> Path:
        """The family's import (rewardserve import, proof and all)."""
        from rewardmodel.families import ImportOptions
        from rewardmodel.importer import import_model

        if name not in self._bundles:
            built = self[name]
            out = self.root / "bundles" / name
            import_model(str(built.path), out, ImportOptions(trust_remote_code=built.remote))
            self._bundles[name] = out
        return self._bundles[name]

    def exported(self, name: str) -> Path:
        """A copy of the family's import with fp32 and int8 ONNX variants, the parity gate calibrated on the
        good-vs-bad pairs the checkpoints were sharpened on."""
        from export.run import ExportSettings, export_bundle
        from tests.helpers import good_bad_rows

        if name not in self._exported:
            data = self.root / "calibration.jsonl"
            if not data.is_file():
                data.write_text("".join(json.dumps(r) + "\n" for r in good_bad_rows(64, seed=5)))
            out = self.root / "exported" / name
            shutil.copytree(self.bundle(name), out)
            export_bundle(out, ExportSettings(variants=("fp32", "int8"), calibration_data=str(data), samples=64,
                                              trust_remote_code=self[name].remote))
            self._exported[name] = out
        return self._exported[name]
