"""The one formatting function: (prompt, completion) → model input, the same in training, export and serving.

Every choice that changes what the model sees lives in a :class:`FormatSpec`, which the bundle card
stores verbatim (DESIGN §2):

* ``template`` — ``"pair"``: the tokenizer's own pair template (``[CLS] prompt [SEP] completion [SEP]``,
  encoders); ``"concat"``: prompt text followed by completion text under the tokenizer's single-text
  template (decoders without a chat template); ``"chat"``: the bundle's chat template rendered with the
  completion as the final assistant turn.
* ``truncation`` — ``"prompt_left"``: the completion is kept whole where it fits and the prompt is cut
  from the left (its most recent turns survive). A completion that cannot fit leaves the prompt a
  quarter of the budget and is cut from the right. Every cut is reported on the encoded input.
* ``score_position`` — ``"first"`` (encoders read the first token) or ``"last"`` (decoders read the
  last non-pad token; with either padding side). For ``"last"`` the pad token must never occur inside
  real input, since transformers finds the score position by searching for the pad id: a pad token
  equal to EOS is the classic way to read every score from the wrong token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenizers import Encoding, Tokenizer

from rewardmodel.chat_template import render_chat
from rewardmodel.conversation import Message, Prompt, render_transcript, transcript_to_messages, validate_messages
from rewardmodel.errors import BundleError, FormatError

Template = Literal["pair", "concat", "chat"]
TEMPLATES: tuple[str, ...] = ("pair", "concat", "chat")


@dataclass(frozen=True)
class SpecialToken:
    """A special token as text and id."""

    token: str
    id: int


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
    append_eos: bool = False
    use_token_type_ids: bool = False
    chat_template: str | None = None
    truncation: Literal["prompt_left"] = "prompt_left"
    special_tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise BundleError(f"unknown formatting template {self.template!r}; expected one of {TEMPLATES}")
        if self.template == "chat" and not self.chat_template:
            raise BundleError("formatting template 'chat' needs the chat template text in 'chat_template'")
        if self.score_position == "first" and self.padding_side != "right":
            raise BundleError("scores read at the first token (encoders) need right padding: encoders use absolute "
                              "positions, and fused encoder kernels assume padding at the end")
        if self.append_eos and self.eos_token is None:
            raise BundleError("formatting asks to append EOS but records no eos_token")
        if self.max_length < 8:
            raise BundleError(f"max_length {self.max_length} is too small to hold a prompt and a completion")
        if self.score_position == "last" and self.eos_token is not None and self.pad_token.id == self.eos_token.id:
            raise BundleError(
                "pad token equals EOS while scores are read at the last non-pad token: every score would be "
                "read one token early. Re-train with a distinct pad token (rewardserve train adds one)."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the bundle card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FormatSpec:
        """Inverse of :meth:`to_dict`; raises :class:`BundleError` on a malformed record."""
        try:
            fields = dict(data)
            for name in ("pad_token", "eos_token", "bos_token"):
                if fields.get(name) is not None:
                    fields[name] = SpecialToken(**fields[name])
            return cls(**fields)
        except TypeError as exc:
            raise BundleError(f"the card's 'formatting' record is malformed ({exc}); re-export the bundle") from exc


@dataclass(frozen=True)
class EncodedInput:
    """Model input for one (prompt, completion), before padding."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    prompt_tokens: int
    completion_tokens: int
    truncated: bool


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` from a bundle with its own padding and truncation switched off.

    Hub ``tokenizer.json`` files often carry fixed padding/truncation (all-MiniLM-L6-v2 pads every text
    to 128): left on, they would silently override the card's rules.
    """
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise BundleError(f"{path} is missing: a bundle needs a fast tokenizer saved as tokenizer.json")
    return unpadded(Tokenizer.from_file(str(path)))


def unpadded(tokenizer: Tokenizer) -> Tokenizer:
    """``tokenizer`` with its own padding and truncation switched off: the :class:`Formatter` does both."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class Formatter:
    """Turns (prompt, completion) pairs into :class:`EncodedInput` under one :class:`FormatSpec`."""

    def __init__(self, tokenizer: Tokenizer, spec: FormatSpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        eos = 1 if spec.append_eos else 0
        if spec.template == "pair":
            self._budget = spec.max_length - tokenizer.num_special_tokens_to_add(True)
        elif spec.template == "concat":
            self._budget = spec.max_length - tokenizer.num_special_tokens_to_add(False) - eos
        else:
            self._budget = spec.max_length - eos

    def texts(self, prompt: Prompt, completion: str) -> tuple[str, str]:
        """The (prompt text, completion text) the tokenizer sees, before special tokens."""
        if not isinstance(completion, str):
            raise FormatError("completion must be a string")
        if self.spec.template == "chat":
            if not isinstance(prompt, str):
                return self._chat_texts(validate_messages(prompt, "prompt"), completion)
            # An HH transcript becomes real turns; its reply's leading space belongs to the transcript
            # syntax ("Assistant: reply"), not to the assistant message.
            turns = transcript_to_messages(prompt)
            if turns is None:
                return self._chat_texts([{"role": "user", "content": prompt}], completion)
            return self._chat_texts(turns, completion[1:] if completion.startswith(" ") else completion)
        if isinstance(prompt, str):
            return prompt, completion
        return render_transcript(validate_messages(prompt, "prompt")), completion

    def _chat_texts(self, messages: list[Message], completion: str) -> tuple[str, str]:
        assert self.spec.chat_template is not None
        tokens = self.spec.special_tokens
        head = render_chat(self.spec.chat_template, messages, add_generation_prompt=True, special_tokens=tokens)
        full = render_chat(
            self.spec.chat_template, [*messages, {"role": "assistant", "content": completion}],
            add_generation_prompt=False, special_tokens=tokens,
        )
        if not full.startswith(head):
            raise FormatError(
                "the chat template renders the conversation so that the prompt is not a prefix of the "
                "prompt+reply text; truncation cannot keep the reply whole with such a template"
            )
        return head, full[len(head):]

    def encode(self, prompt: Prompt, completion: str) -> EncodedInput:
        """Format and tokenize one (prompt, completion)."""
        return self.encode_many([(prompt, completion)])[0]

    def encode_many(self, items: Sequence[tuple[Prompt, str]]) -> list[EncodedInput]:
        """Format and tokenize many items; tokenization runs as one parallel batch in the Rust tokenizer."""
        texts = [self.texts(p, c) for p, c in items]
        flat = [t for pair in texts for t in pair]
        encodings = self.tokenizer.encode_batch(flat, add_special_tokens=False) if flat else []
        return [self._assemble(encodings[2 * i], encodings[2 * i + 1]) for i in range(len(texts))]

    def _assemble(self, prompt: Encoding, completion: Encoding) -> EncodedInput:
        spec = self.spec
        # A chat prompt that opens with BOS keeps it when cut: the model never saw text without it.
        keep = 1 if spec.template == "chat" and spec.bos_token and prompt.ids[:1] == [spec.bos_token.id] else 0
        n_prompt, n_completion = len(prompt.ids) - keep, len(completion.ids)
        prompt_room, completion_room = split_budget(self._budget - keep, n_prompt, n_completion)
        truncated = prompt_room < n_prompt or completion_room < n_completion
        if completion_room < n_completion:
            completion.truncate(completion_room, direction="right")
        prompt_ids = prompt.ids
        if prompt_room < n_prompt:
            prompt_ids = prompt_ids[:keep] + prompt_ids[len(prompt_ids) - prompt_room:]
            prompt.truncate(prompt_room, direction="left")  # used by the pair/concat templates (keep == 0)
        type_ids: list[int] | None = None
        if spec.template == "pair":
            joined = self.tokenizer.post_process(prompt, completion, add_special_tokens=True)
            ids, type_ids = joined.ids, joined.type_ids
        elif spec.template == "concat":
            ids = self.tokenizer.post_process(Encoding.merge([prompt, completion]), add_special_tokens=True).ids
        else:
            ids = prompt_ids + completion.ids
        return self._finish(ids, type_ids, len(prompt_ids), len(completion.ids), truncated)

    def encode_text(self, text: str, add_special_tokens: bool = True) -> EncodedInput:
        """A whole text (prompt and reply already joined, e.g. a decoded rollout) as the model sees it.

        For adapters whose clients send one string (OpenRLHF's remote reward model, vLLM-style classify):
        no template is applied (a ``chat`` bundle's text is expected to be rendered already), the
        tokenizer's single-text special tokens are added for ``pair``/``concat`` bundles, and an
        over-long text is cut from the left so that its end, the reply, survives. ``add_special_tokens``
        False (vLLM's flag, for text that already carries them) skips the single-text specials; the card's
        appended EOS stays, since the score is read there.
        """
        if not isinstance(text, str):
            raise FormatError("text must be a string")
        spec = self.spec
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        add = add_special_tokens and spec.template != "chat"
        specials = self.tokenizer.num_special_tokens_to_add(False) if add else 0
        room = spec.max_length - specials - (1 if spec.append_eos else 0)
        truncated = len(encoding.ids) > room
        if truncated:
            encoding.truncate(room, direction="left")
        if add:
            encoding = self.tokenizer.post_process(encoding, add_special_tokens=True)
        return self._finish(encoding.ids, encoding.type_ids, 0, len(encoding.ids), truncated)

    def _finish(self, ids: list[int], type_ids: list[int] | None, n_prompt: int, n_completion: int,
                truncated: bool) -> EncodedInput:
        spec = self.spec
        if not ids and not spec.append_eos:
            raise FormatError("the input has no tokens to score (an empty text without special tokens)")
        if spec.append_eos:
            assert spec.eos_token is not None
            ids = [*ids, spec.eos_token.id]
            type_ids = None if type_ids is None else [*type_ids, type_ids[-1] if type_ids else 0]
        if spec.score_position == "last" and spec.pad_token.id in ids:
            raise FormatError(
                f"the input contains the pad token {spec.pad_token.token!r}; the score position would be wrong"
            )
        if not spec.use_token_type_ids:
            type_ids = None
        return EncodedInput(ids, type_ids, n_prompt, n_completion, truncated)


def split_budget(budget: int, n_prompt: int, n_completion: int) -> tuple[int, int]:
    """Token room for (prompt, completion) under the ``prompt_left`` policy.

    The prompt is guaranteed ``min(n_prompt, budget // 4)`` tokens. The completion is kept whole when it
    fits beside that, and the prompt gets the rest (cut from the left by the caller); otherwise the
    completion gets everything but the prompt's guaranteed share (cut from the right).
    """
    if n_prompt + n_completion <= budget:
        return n_prompt, n_completion
    floor = min(n_prompt, budget // 4)
    if n_completion <= budget - floor:
        return budget - n_completion, n_completion
    return floor, budget - floor
