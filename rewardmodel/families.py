"""Reward-model families: which one a checkpoint belongs to, its scoring spec, and its reference path.

A family is known by its ``config.json`` (architectures, ``auto_map``, OpenRLHF's fields) and, for models with
their own code, by the modules the loaded model has. Each family derives the card's spec
(:class:`~rewardmodel.spec.FormatSpec` and :class:`~rewardmodel.head.HeadSpec`) and scores a probe the way
its documented usage calls the model: the *reference path* that :mod:`rewardmodel.importer` proves the spec
against. The reference paths are written after each family's own code and model cards (the table in
docs/design.md, "Families", says which):

* decoder classifiers (Skywork-Reward, GRM, any ``*ForSequenceClassification`` decoder): the chat template
  rendered as text, a BOS it writes dropped, then the tokenizer with its specials (one BOS); the model's own
  forward, which reads the last non-pad token. A transformers Trainer's output directory (TRL's
  RewardTrainer) is tokenized as TRL does: ``apply_chat_template(tokenize=True)``, or for plain text the
  tokenizer with its specials and EOS appended.
* encoder classifiers (OpenAssistant's DeBERTa, BERT, RoBERTa): ``tokenizer(question, answer)``.
* OpenRLHF checkpoints: its reward dataset's recipe (the text, trailing newlines stripped, ``" " + EOS``, no
  special tokens, the last id EOS) and its forward (position ids from the mask, the value at the last mask
  position).
* gated multi-objective models with their own code (ArmoRM): ``apply_chat_template(tokenize=True)`` and the
  model's ``score`` and ``rewards``.
* reward-token models with their own code (internlm2-reward): the model's own ``get_score``.
* process reward models (Qwen2.5-Math-PRM, ``*ForTokenClassification``): steps joined by the step tag, the
  rendered text encoded, softmax at each tag.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rewardmodel.conversation import Message
from rewardmodel.criteria import Criteria
from rewardmodel.errors import BundleError
from rewardmodel.head import OPENRLHF, HeadSpec
from rewardmodel.spec import Bos, FormatSpec, Read, SpecialToken, StepSpec

DEFAULT_STEP_TOKEN = "<extra_0>"
"""Qwen2.5-Math-PRM's step tag, the default where the vocabulary has it."""
DEFAULT_MAX_LENGTH = 4096
"""Token limit of an imported model unless told (and below its position table): long enough for RL rollouts, short
enough to fit the service's default batch budget (max_batch_tokens 8192)."""


@dataclass(frozen=True)
class ImportOptions:
    """What ``rewardserve import`` may be told beyond the source."""

    trust_remote_code: bool = False
    max_length: int = 0
    """0: the model's position table, at most :data:`DEFAULT_MAX_LENGTH`."""
    step_token: str = ""
    """Process reward models: the step tag (default ``<extra_0>`` where the vocabulary has it)."""
    step_separator: str = "\n\n"
    max_steps: int = 64
    aggregate: Literal["min", "last", "mean"] = "min"
    bos: Bos | Literal[""] = ""
    """Override the family's BOS policy (the proof still compares against the family's reference path)."""


@dataclass
class Checkpoint:
    """What import reads of a source: its directory, ``config.json``, tokenizer and (once loaded) model."""

    root: Path
    config: dict[str, Any]
    tokenizer: Any
    model: Any = None


@dataclass(frozen=True)
class Probe:
    """A conversation to score both ways: prompt messages and the reply."""

    messages: list[Message]
    completion: str

    @property
    def question(self) -> str:
        """The last user turn, for families fed text rather than messages."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


@dataclass(frozen=True)
class Derived:
    """A family's spec for one checkpoint, and why."""

    family: str
    formatting: FormatSpec
    head: HeadSpec
    criteria: Criteria | None = None
    normalization: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def chat(self) -> bool:
        """Prompts are chat messages (else the probe's question text)."""
        return self.formatting.template == "chat"


Reference = tuple[list[int], npt.NDArray[np.float64]]
"""(the ids the reference path fed, its output row in the card's layout)."""


def special(tokenizer: Any, token_id: int | None) -> SpecialToken | None:
    """The token of ``token_id`` as text and id."""
    if token_id is None:
        return None
    return SpecialToken(str(tokenizer.convert_ids_to_tokens(int(token_id))), int(token_id))


def _named(tokenizer: Any, name: str) -> SpecialToken | None:
    token = getattr(tokenizer, name, None)
    return None if token is None else special(tokenizer, tokenizer.convert_tokens_to_ids(str(token)))


OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                    "data2vec-text", "longformer")
"""Model types whose positions start after the pad id (RoBERTa's), so their table holds pad_token_id + 1 fewer."""


def max_length(ckpt: Checkpoint, options: ImportOptions) -> int:
    """The card's token limit: the option, else the position table and the tokenizer's model_max_length, at most
    :data:`DEFAULT_MAX_LENGTH`."""
    table = int(ckpt.config.get("max_position_embeddings") or ckpt.config.get("n_positions") or DEFAULT_MAX_LENGTH)
    if ckpt.config.get("model_type") in OFFSET_POSITIONS:
        table -= int(ckpt.config.get("pad_token_id") or 0) + 1
    limit = min(table, int(getattr(ckpt.tokenizer, "model_max_length", table) or table), DEFAULT_MAX_LENGTH)
    if options.max_length > table:
        raise BundleError(f"--max-length {options.max_length} is beyond the model's {table} positions")
    return options.max_length or limit


def base_spec(ckpt: Checkpoint, options: ImportOptions, *, template: Literal["pair", "concat", "chat"],
              read: Read, bos: Bos, pad_id: int | None = None, **fields: Any) -> FormatSpec:
    """A spec with what every family shares: the tokenizer's specials, right padding, joined tokenization."""
    tok = ckpt.tokenizer
    pad = special(tok, pad_id) if pad_id is not None else (
        _named(tok, "pad_token") or _named(tok, "eos_token") or special(tok, 0))
    assert pad is not None
    names = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token")
    return FormatSpec(
        template=template, max_length=max_length(ckpt, options), padding_side="right", pad_token=pad,
        score_position="first" if template == "pair" else "last", eos_token=_named(tok, "eos_token"),
        bos_token=_named(tok, "bos_token"), chat_template=tok.chat_template if template == "chat" else None,
        special_tokens={n: str(getattr(tok, n)) for n in names if getattr(tok, n, None) is not None},
        bos=options.bos or bos, tokenize="joined", read=read, **fields)


def conversation(probe: Probe) -> list[Message]:
    """The probe's messages with its reply as the final assistant turn."""
    return [*probe.messages, {"role": "assistant", "content": probe.completion}]


def chat_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    """``apply_chat_template(tokenize=True)``: the template's own specials, none added."""
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def run(model: Any, ids: list[int]) -> Any:
    """The model's own forward on one unpadded sequence (batch 1, no mask), as model cards call it."""
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]))


def _logits(out: Any) -> Any:
    return out.logits if hasattr(out, "logits") else out[0]


def _linear_head(model: Any, name: str, outputs: int | None = 1) -> None:
    import torch

    head = getattr(model, name, None)
    if not isinstance(head, torch.nn.Linear) or (outputs is not None and head.out_features != outputs):
        shape = None if head is None else getattr(head, "out_features", type(head).__name__)
        raise BundleError(f"the model's {name!r} head is {shape!r}, not a linear layer of {outputs} output(s): its "
                          "outputs do not fit a reward model of this family")


class Family(ABC):
    """How one family is scored: its spec (:meth:`derive`) and its reference path (:meth:`reference`)."""

    name = ""
    auto_class = "AutoModelForSequenceClassification"

    @abstractmethod
    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        """The card's spec for ``ckpt`` (its model loaded)."""

    @abstractmethod
    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        """``probe`` scored by the family's documented usage."""


class DecoderClassifier(Family):
    """A decoder ``*ForSequenceClassification`` (Skywork-Reward, GRM, TRL's RewardTrainer output)."""

    name = "decoder-classifier"

    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        model, tok = ckpt.model, ckpt.tokenizer
        _linear_head(model, "score")
        pad_id = ckpt.config.get("pad_token_id")
        trl = (ckpt.root / "training_args.bin").is_file()
        chat = bool(tok.chat_template)
        notes = ["read at the last non-pad token (config.pad_token_id), as transformers' classifier reads it"
                 if pad_id is not None else "no pad_token_id: read at the last token, as the model reads one input"]
        if trl:
            notes.append("a Trainer's output directory (training_args.bin): tokenized as TRL's RewardTrainer does")
        bos: Bos = "template" if trl and chat else "tokenizer"
        spec = base_spec(ckpt, options, template="chat" if chat else "concat", read="last_non_pad" if pad_id is not
                         None else "last_mask", bos=bos, pad_id=pad_id, eos_recipe="trl" if trl and not chat else "")
        head = HeadSpec(kind="linear", backbone=model.base_model_prefix, module="score")
        return Derived("trl" if trl else self.name, spec, head, notes=notes)

    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        tok = ckpt.tokenizer
        if derived.family == "trl":
            ids = chat_ids(tok, conversation(probe)) if derived.chat else \
                tok(_eos_appended(probe.question + probe.completion, tok.eos_token))["input_ids"]
        else:
            text = tok.apply_chat_template(conversation(probe), tokenize=False) if derived.chat else \
                probe.question + probe.completion
            if derived.chat and tok.bos_token and text.startswith(tok.bos_token):
                text = text[len(tok.bos_token):]  # Skywork's model cards: the tokenizer adds it again
            ids = tok(text)["input_ids"]
        return ids, _logits(run(ckpt.model, ids))[0].float().numpy()


def _eos_appended(text: str, eos: str) -> str:
    return text if text.endswith(eos) else text + eos


class EncoderClassifier(Family):
    """An encoder ``*ForSequenceClassification`` on a (question, answer) pair (OpenAssistant's DeBERTa)."""

    name = "encoder-classifier"

    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        labels = ckpt.model.config.num_labels
        if labels != 1:
            raise BundleError(f"the classifier has {labels} labels; a reward model has one output (num_labels=1)")
        tok = ckpt.tokenizer
        if tok.pad_token is None:
            raise BundleError("this encoder's tokenizer has no pad token; set one in its tokenizer_config.json")
        spec = base_spec(ckpt, options, template="pair", read="model", bos="template",
                         use_token_type_ids="token_type_ids" in tok.model_input_names)
        return Derived(self.name, spec, HeadSpec(), notes=["the model's own classifier, read at the first token"])

    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        import torch

        inputs = ckpt.tokenizer(probe.question, probe.completion, return_tensors="pt")
        with torch.inference_mode():
            out = ckpt.model(**inputs).logits[0]
        return inputs["input_ids"][0].tolist(), out.float().numpy()


class OpenRLHF(Family):
    """A checkpoint written by OpenRLHF's reward-model trainer."""

    name = "openrlhf"
    auto_class = OPENRLHF

    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        from rewardmodel.openrlhf import value_head_prefix

        model, tok = ckpt.model, ckpt.tokenizer
        head_name = value_head_prefix(model.config)
        _linear_head(model, head_name)
        if tok.eos_token is None:
            raise BundleError("OpenRLHF's recipe appends EOS, and this tokenizer has none")
        spec = base_spec(ckpt, options, template="chat" if tok.chat_template else "concat", read="last_mask",
                         bos="template", eos_recipe="openrlhf")
        mean, std = ckpt.config.get("mean"), ckpt.config.get("std")
        normalization = (float(mean), float(std)) if isinstance(mean, (int, float)) and \
            isinstance(std, (int, float)) and std > 0 else None
        return Derived(self.name, spec, HeadSpec(kind="linear", auto_class=OPENRLHF, backbone=model.base_model_prefix,
                                                 module=head_name), normalization=normalization,
                       notes=[f"OpenRLHF's value head {head_name!r}, read at the last attention-mask position"])

    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        import torch

        tok, model = ckpt.tokenizer, ckpt.model
        text = tok.apply_chat_template(conversation(probe), tokenize=False) if derived.chat else \
            probe.question + probe.completion
        text = text.rstrip("\n")
        if not text.endswith(tok.eos_token):
            text += " " + tok.eos_token
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids[-1] = tok.eos_token_id
        mask = torch.ones((1, len(ids)), dtype=torch.long)
        positions = mask.cumsum(-1) - 1
        with torch.inference_mode():
            hidden = getattr(model, model.base_model_prefix)(torch.tensor([ids]), attention_mask=mask,
                                                             position_ids=positions)[0]
            values = getattr(model, derived.head.module)(hidden).squeeze(-1)
        last = mask.size(1) - 1 - mask.fliplr().argmax(dim=1)
        return ids, values[0, last].float().numpy()


class GatedMultiObjective(Family):
    """A model with its own code, several objectives and a gate (ArmoRM)."""

    name = "gated-multi-objective"

    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        model = ckpt.model
        pattern = getattr(sys.modules.get(type(model).__module__), "token_pattern", None)
        if not (isinstance(pattern, list) and pattern and all(isinstance(t, int) for t in pattern)):
            raise BundleError("the gated model's code names no token_pattern where its gate reads; rewardserve "
                              "cannot tell the gate's position")
        objectives = int(model.regression_layer.out_features)
        names = ckpt.config.get("objective_names") or [f"objective_{i}" for i in range(objectives)]
        if len(names) != objectives:
            raise BundleError(f"objective_names lists {len(names)} names for {objectives} objectives")
        pad_id = ckpt.config.get("pad_token_id")
        spec = base_spec(ckpt, options, template="chat", read="first_pad" if pad_id is not None else "last_mask",
                         bos="template", pad_id=pad_id, gate_pattern=tuple(pattern))
        head = HeadSpec(kind="gated", auto_class=self.auto_class, trust_remote_code=True,
                        backbone=model.base_model_prefix, module="regression_layer", outputs=objectives, gate="gating",
                        transform="reward_transform_matrix" if hasattr(model, "reward_transform_matrix") else "")
        criteria = Criteria(tuple(names), dict.fromkeys(names), dict.fromkeys(names, 0.0))
        return Derived(self.name, spec, head, criteria, notes=[
            f"{objectives} objectives at the token before the first pad; the gate at the last {pattern}"])

    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        ids = chat_ids(ckpt.tokenizer, conversation(probe))
        out = run(ckpt.model, ids)
        return ids, np.concatenate([out.score.reshape(1).float().numpy(), out.rewards[0].float().numpy()])


class RewardToken(Family):
    """A model with its own code that reads a reward token appended to the conversation (internlm2-reward)."""

    name = "reward-token"

    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        model = ckpt.model
        _linear_head(model, "v_head")
        token = int(ckpt.config["reward_token_id"])
        spec = base_spec(ckpt, options, template="chat", read="last_mask", bos="template", suffix_ids=(token,),
                         pad_id=ckpt.config.get("pad_token_id"))
        head = HeadSpec(kind="linear", auto_class=self.auto_class, trust_remote_code=True,
                        backbone=model.base_model_prefix, module="v_head")
        return Derived(self.name, spec, head, notes=[f"reward token {token} appended, v_head read there"])

    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        tok, model = ckpt.tokenizer, ckpt.model
        text = tok.apply_chat_template(conversation(probe), tokenize=False, add_generation_prompt=False)
        ids = [*tok.encode(text, add_special_tokens=False), int(ckpt.config["reward_token_id"])]
        import torch

        with torch.inference_mode():
            score = model.get_score(tok, conversation(probe))
        return ids, np.asarray([score], dtype=np.float64)


class ProcessReward(Family):
    """A process reward model: a reward per step, read at each step tag (Qwen2.5-Math-PRM)."""

    name = "process-reward"

    def derive(self, ckpt: Checkpoint, options: ImportOptions) -> Derived:
        model, tok = ckpt.model, ckpt.tokenizer
        module = next((m for m in ("score", "classifier") if hasattr(model, m)), None)
        labels = int(getattr(model.config, "num_labels", 0) or 0)
        if module is None or labels < 2:
            raise BundleError("a process reward model needs a per-token head of at least 2 labels (score or "
                              "classifier); this one has none")
        tag = options.step_token or DEFAULT_STEP_TOKEN
        tag_id = tok.convert_tokens_to_ids(tag)
        if tag_id is None or tag_id == tok.unk_token_id or tok.convert_ids_to_tokens(tag_id) != tag:
            raise BundleError(f"the vocabulary has no step tag {tag!r}; name the model's with --step-token")
        steps = StepSpec(SpecialToken(tag, int(tag_id)), options.step_separator, options.max_steps)
        spec = base_spec(ckpt, options, template="chat" if tok.chat_template else "concat", read="last_mask",
                         bos="both", steps=steps)
        head = HeadSpec(kind="steps", auto_class=self.auto_class, trust_remote_code=self.auto_class == "AutoModel",
                        backbone=model.base_model_prefix, module=module, outputs=labels, label=1,
                        aggregate=options.aggregate)
        return Derived(self.name, spec, head, notes=[
            f"steps split at {options.step_separator!r}, each tagged {tag!r}; softmax label 1 at each tag; the "
            f"item's reward is the {options.aggregate} step reward"])

    def reference(self, ckpt: Checkpoint, derived: Derived, probe: Probe) -> Reference:
        import torch

        tok, steps = ckpt.tokenizer, derived.formatting.steps
        assert steps is not None
        tag = steps.token.token
        content = tag.join(probe.completion.split(steps.separator)) + tag
        messages = [*probe.messages, {"role": "assistant", "content": content}]
        text = tok.apply_chat_template(messages, tokenize=False) if derived.chat else probe.question + content
        ids = tok.encode(text)
        probs = torch.softmax(_logits(run(ckpt.model, ids))[0].float(), dim=-1)[:, derived.head.label]
        at = [i for i, t in enumerate(ids) if t == steps.token.id]
        rewards = probs[at].numpy().astype(np.float64)
        how = derived.head.aggregate
        item = rewards.min() if how == "min" else rewards[-1] if how == "last" else rewards.mean()
        row = np.zeros(1 + steps.max_steps)
        row[0], row[1:1 + len(rewards)] = item, rewards
        return ids, row


def remote_family(model: Any, config: dict[str, Any]) -> Family:
    """The family of a model with its own code, from the modules it has; refuses one rewardserve cannot read."""
    if hasattr(model, "gating") and hasattr(model, "regression_layer"):
        return GatedMultiObjective()
    if hasattr(model, "v_head") and "reward_token_id" in config:
        return RewardToken()
    if "ProcessRewardModel" in type(model).__name__ or "TokenClassification" in type(model).__name__:
        return ProcessReward()
    raise BundleError(f"{type(model).__name__} runs its own code, and its head is none rewardserve knows (a gate "
                      "and objectives as ArmoRM's, a v_head with a reward token as internlm2-reward's, or a "
                      "per-step head); it cannot be proven, so it is not imported")


def detect(config: dict[str, Any]) -> Family | None:
    """The family of a ``config.json``; None for a model with its own code (known once loaded). Refuses an
    architecture that is no reward model, naming what to do."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else ""
    if arch == "RewardModel" or "value_head_prefix" in config:
        return OpenRLHF()
    if config.get("auto_map"):
        return None
    if arch.endswith("ForSequenceClassification"):
        if config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            return EncoderClassifier()
        return DecoderClassifier()
    if arch.endswith("ForTokenClassification"):
        family = ProcessReward()
        family.auto_class = "AutoModelForTokenClassification"
        return family
    raise BundleError(
        f"architecture {arch or '(none named)'} is not a reward model rewardserve can import: it imports "
        "*ForSequenceClassification and *ForTokenClassification (process reward) checkpoints, OpenRLHF reward "
        "models, and models with their own code of the known kinds. To train a reward model on this one: "
        "`rewardserve train --model DIR`")
