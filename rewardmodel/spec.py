"""The scoring spec's input half: every choice that decides which tokens a model sees and where it is read.

A reward model's score is wrong in one of four ways (docs/design.md, "The scoring spec"): the token sequence,
the position read, the head, or the post-processing. :class:`FormatSpec` records the first two, and
:class:`~rewardmodel.head.HeadSpec` the last two; the bundle card stores both, so training, export, the
import proof and serving all score the same way.

The token sequence:

* ``template`` — ``"pair"``: the tokenizer's own pair template (``[CLS] prompt [SEP] completion [SEP]``,
  encoders); ``"concat"``: prompt text followed by completion text under the tokenizer's single-text
  template; ``"chat"``: the chat template rendered with the completion as the final assistant turn.
* ``bos`` (chat, concat) — who writes the BOS: ``"template"`` (the rendered text as it is, no specials added),
  ``"tokenizer"`` (the tokenizer's single-text specials are added, and a BOS a chat template writes is dropped
  first) or ``"both"`` (the specials added to the template's text as it is: two BOS where the template writes
  one, as a model's documented usage may do).
* ``suffix_ids`` — ids appended after tokenization, where truncation cannot cut them (EOS, internlm2's reward
  token).
* ``eos_recipe`` — an EOS a trainer's recipe appends to the text unless it ends with one: ``"openrlhf"``
  (trailing newlines stripped, then ``" " + EOS``; the last id is EOS even when the text was cut) or ``"trl"``
  (TRL's plain-text data: EOS with no space).
* ``tokenize`` — ``"split"``: prompt and completion tokenized apart (what ``rewardserve train`` trains on);
  ``"joined"``: the whole text at once, as a model's own code tokenizes it, falling back to split for an
  input that must be truncated.
* ``truncation`` — ``"prompt_left"``: the completion is kept whole where it fits and the prompt is cut from
  the left (its most recent turns survive).
* ``steps`` — a process reward model's step tags: the completion's steps, split at a separator, each end in
  the tag, whose positions are read.

The position read (``read``):

* ``"model"`` — the model's own forward reads it (sequence classifiers): the first token (encoders) or the
  last non-pad one (decoders), as ``score_position`` says. The pad token must then never occur inside real
  input, since transformers finds the position by searching for the pad id.
* ``"last_mask"`` — the last position of the attention mask (OpenRLHF, internlm2, ArmoRM).
* ``"last_non_pad"`` — the rightmost token that is not the pad id, as transformers' classifiers read it: with
  pad = EOS (TRL's default) that is the token before the trailing EOS, which is where such models trained.
* ``"first_pad"`` — the token before the first pad id (the last one when there is none), as older transformers
  and ArmoRM's own code read it.
* ``gate_pattern`` — ids whose last occurrence marks where a gate reads (ArmoRM's assistant header).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from rewardmodel.errors import BundleError

Template = Literal["pair", "concat", "chat"]
TEMPLATES: tuple[str, ...] = ("pair", "concat", "chat")
Read = Literal["model", "last_mask", "last_non_pad", "first_pad"]
Bos = Literal["template", "tokenizer", "both"]
FORMAT_RECORD_VERSION = 2


@dataclass(frozen=True)
class SpecialToken:
    """A special token as text and id."""

    token: str
    id: int


@dataclass(frozen=True)
class StepSpec:
    """Where a process reward model reads its step rewards."""

    token: SpecialToken
    """The tag that ends each step (Qwen2.5-Math-PRM: ``<extra_0>``); every occurrence is a step."""
    separator: str = "\n\n"
    """What separates the steps of a completion; each step is followed by the tag."""
    max_steps: int = 64
    """Most steps in one input: the width of the model's output row."""

    def __post_init__(self) -> None:
        if not self.separator:
            raise BundleError("the step separator must not be empty")
        if not 1 <= self.max_steps <= 4096:
            raise BundleError(f"max_steps must be within 1..4096, got {self.max_steps}")


@dataclass(frozen=True)
class FormatSpec:
    """Every formatting decision of a bundle; stored as ``formatting`` in ``reward_model.json``."""

    template: Template
    max_length: int
    score_position: Literal["first", "last"]
    padding_side: Literal["right", "left"]
    pad_token: SpecialToken
    eos_token: SpecialToken | None = None
    bos_token: SpecialToken | None = None
    use_token_type_ids: bool = False
    chat_template: str | None = None
    truncation: Literal["prompt_left"] = "prompt_left"
    special_tokens: dict[str, str] = field(default_factory=dict)
    bos: Bos = "template"
    suffix_ids: tuple[int, ...] = ()
    eos_recipe: Literal["", "openrlhf", "trl"] = ""
    tokenize: Literal["split", "joined"] = "split"
    read: Read = "model"
    gate_pattern: tuple[int, ...] = ()
    steps: StepSpec | None = None

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise BundleError(f"unknown formatting template {self.template!r}; expected one of {TEMPLATES}")
        if self.template == "chat" and not self.chat_template:
            raise BundleError("formatting template 'chat' needs the chat template text in 'chat_template'")
        if self.score_position == "first" and self.padding_side != "right":
            raise BundleError("scores read at the first token (encoders) need right padding: encoders use absolute "
                              "positions, and fused encoder kernels assume padding at the end")
        if self.read != "model" and self.padding_side != "right":
            raise BundleError(f"read {self.read!r} is computed for right padding, where the real tokens keep the "
                              "positions they have unpadded")
        if self.max_length < 8:
            raise BundleError(f"max_length {self.max_length} is too small to hold a prompt and a completion")
        if self.reads_own_last and self.eos_token is not None and self.pad_token.id == self.eos_token.id:
            raise BundleError(
                "pad token equals EOS while the model reads its score at the last non-pad token: every score would "
                "be read one token early. Re-train with a distinct pad token (rewardserve train adds one)."
            )
        if self.eos_recipe and self.eos_token is None:
            raise BundleError(f"the {self.eos_recipe} EOS recipe needs the card's eos_token")
        if (self.steps or self.gate_pattern) and self.read == "model":
            raise BundleError("step tags and gate patterns are read at explicit positions: read must not be 'model'")

    @property
    def reads_own_last(self) -> bool:
        """The model itself finds its score at the last non-pad token (so the pad id must never be real input)."""
        return self.read == "model" and self.score_position == "last"

    @property
    def positions_width(self) -> int:
        """Columns of the positions a batch carries (0: the model reads its own)."""
        if self.read == "model":
            return 0
        if self.steps is not None:
            return self.steps.max_steps
        return 2 if self.gate_pattern else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the bundle card."""
        data = asdict(self)
        data["format_record"] = FORMAT_RECORD_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FormatSpec:
        """Inverse of :meth:`to_dict`, reading cards of version 1 too; raises :class:`BundleError`."""
        try:
            fields = dict(data)
            if fields.pop("format_record", 1) == 1:  # version 1: EOS appended by a flag, the model reads its own
                eos = fields.get("eos_token")
                fields["suffix_ids"] = [eos["id"]] if fields.pop("append_eos", False) and eos else []
                if fields.get("template") == "concat":  # the tokenizer's single-text specials were always added
                    fields["bos"] = "tokenizer"
            for name in ("pad_token", "eos_token", "bos_token"):
                if fields.get(name) is not None:
                    fields[name] = SpecialToken(**fields[name])
            if fields.get("steps") is not None:
                steps = dict(fields["steps"])
                fields["steps"] = StepSpec(**{**steps, "token": SpecialToken(**steps["token"])})
            fields["suffix_ids"] = tuple(fields.get("suffix_ids", ()))
            fields["gate_pattern"] = tuple(fields.get("gate_pattern", ()))
            return cls(**fields)
        except (TypeError, KeyError) as exc:
            raise BundleError(f"the card's 'formatting' record is malformed ({exc}); re-export the bundle") from exc
