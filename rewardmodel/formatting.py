"""The one formatting function: (prompt, completion) → model input, the same in training, export and serving.

Every choice that changes what the model sees lives in a :class:`~rewardmodel.spec.FormatSpec`, which the
bundle card stores verbatim (docs/design.md, "The scoring spec"). Truncation follows the ``prompt_left``
policy: the completion is kept whole where it fits and the prompt is cut from the left (its most recent turns
survive). A completion that cannot fit leaves the prompt a quarter of the budget and is cut from the right.
Every cut is reported on the encoded input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from rewardmodel.chat_template import render_chat
from rewardmodel.conversation import Message, Prompt, render_transcript, transcript_to_messages, validate_messages
from rewardmodel.errors import BundleError, FormatError
from rewardmodel.spec import TEMPLATES, FormatSpec, SpecialToken, StepSpec, Template

__all__ = ["TEMPLATES", "EncodedInput", "FormatSpec", "Formatter", "SpecialToken", "StepSpec", "Template",
           "load_tokenizer", "split_budget", "unpadded"]


@dataclass(frozen=True)
class EncodedInput:
    """Model input for one (prompt, completion), before padding."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    prompt_tokens: int
    completion_tokens: int
    truncated: bool
    marks: tuple[int, ...] = ()
    """Positions the head reads beyond the score's own: a gate's (ArmoRM) or each step tag's (PRMs)."""


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


def single_specials(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """(ids before, ids after) a text that the tokenizer's single-text template adds (BOS, or [CLS] … [SEP])."""
    plain = tokenizer.encode("x", add_special_tokens=False)
    full = tokenizer.post_process(plain, add_special_tokens=True).ids
    n = len(plain.ids)
    for i in range(len(full) - n + 1):
        if full[i:i + n] == plain.ids:
            return full[:i], full[i + n:]
    raise BundleError("the tokenizer's single-text template rewrites the text's ids; it cannot be composed")


class Formatter:
    """Turns (prompt, completion) pairs into :class:`EncodedInput` under one :class:`FormatSpec`."""

    def __init__(self, tokenizer: Tokenizer, spec: FormatSpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self._prefix, self._suffix = single_specials(tokenizer)
        self._specials = spec.template != "pair" and spec.bos != "template"
        """The text is wrapped in the tokenizer's single-text specials (bos tokenizer/both)."""
        suffix = len(spec.suffix_ids)
        if spec.template == "pair":
            self._budget = spec.max_length - tokenizer.num_special_tokens_to_add(True) - suffix
        elif self._specials:
            self._budget = spec.max_length - len(self._prefix) - len(self._suffix) - suffix
        else:
            self._budget = spec.max_length - suffix

    def texts(self, prompt: Prompt, completion: str) -> tuple[str, str]:
        """The (prompt text, completion text) the tokenizer sees, before special tokens."""
        if not isinstance(completion, str):
            raise FormatError("completion must be a string")
        if self.spec.template == "chat":
            if not isinstance(prompt, str):
                head, tail = self._chat_texts(validate_messages(prompt, "prompt"), completion)
            else:
                # An HH transcript becomes real turns; its reply's leading space belongs to the transcript
                # syntax ("Assistant: reply"), not to the assistant message.
                turns = transcript_to_messages(prompt)
                if turns is None:
                    head, tail = self._chat_texts([{"role": "user", "content": prompt}], completion)
                else:
                    head, tail = self._chat_texts(turns, completion[1:] if completion.startswith(" ") else completion)
        else:
            head = prompt if isinstance(prompt, str) else render_transcript(validate_messages(prompt, "prompt"))
            tail = self._tagged(completion)
        if self.spec.eos_recipe:
            whole = self._with_eos(head + tail)
            return (whole, "") if len(whole) < len(head) else (head, whole[len(head):])
        return head, tail

    def _with_eos(self, text: str) -> str:
        """``text`` with the EOS its trainer's recipe appends (see the spec's ``eos_recipe``)."""
        spec = self.spec
        assert spec.eos_token is not None
        eos = spec.eos_token.token
        if spec.eos_recipe == "openrlhf":
            text = text.rstrip("\n")
            return text if text.endswith(eos) else text + " " + eos
        return text if text.endswith(eos) else text + eos

    def is_rendered(self, prompt: str) -> bool:
        """Whether ``prompt`` is this chat template's rendering already: it ends with the assistant header the
        template writes for a generation (as the prompts of an RL trainer that applied the template do)."""
        return bool(self._generation_header) and prompt.endswith(self._generation_header)

    @cached_property
    def _generation_header(self) -> str:
        """What the chat template adds for a generation (``<|im_start|>assistant\n``); empty without a chat
        template, or for one that writes none."""
        if self.spec.chat_template is None:
            return ""
        turn = [{"role": "user", "content": "x"}]
        tokens = self.spec.special_tokens
        try:
            bare = render_chat(self.spec.chat_template, turn, add_generation_prompt=False, special_tokens=tokens)
            asked = render_chat(self.spec.chat_template, turn, add_generation_prompt=True, special_tokens=tokens)
        except FormatError:
            return ""
        return asked[len(bare):] if asked.startswith(bare) else ""

    def _tagged(self, completion: str) -> str:
        """A process reward model's completion with each step ended by the step tag."""
        steps = self.spec.steps
        if steps is None:
            return completion
        return "".join(step + steps.token.token for step in completion.split(steps.separator))

    def _chat_texts(self, messages: list[Message], completion: str) -> tuple[str, str]:
        spec = self.spec
        assert spec.chat_template is not None
        tokens = spec.special_tokens
        head = render_chat(spec.chat_template, messages, add_generation_prompt=True, special_tokens=tokens)
        full = render_chat(spec.chat_template, [*messages, {"role": "assistant", "content": self._tagged(completion)}],
                           add_generation_prompt=False, special_tokens=tokens)
        if not full.startswith(head):
            raise FormatError(
                "the chat template renders the conversation so that the prompt is not a prefix of the "
                "prompt+reply text; truncation cannot keep the reply whole with such a template"
            )
        if spec.bos == "tokenizer" and spec.bos_token and head.startswith(spec.bos_token.token):
            head, full = head[len(spec.bos_token.token):], full[len(spec.bos_token.token):]  # the tokenizer adds it
        return head, full[len(head):]

    def encode(self, prompt: Prompt, completion: str) -> EncodedInput:
        """Format and tokenize one (prompt, completion)."""
        return self.encode_many([(prompt, completion)])[0]

    def encode_many(self, items: Sequence[tuple[Prompt, str]]) -> list[EncodedInput]:
        """Format and tokenize many items; tokenization runs as one parallel batch in the Rust tokenizer."""
        texts = [self.texts(p, c) for p, c in items]
        out: list[EncodedInput | None] = [None] * len(texts)
        if self.spec.tokenize == "joined" and self.spec.template != "pair":
            joined = self.tokenizer.encode_batch([h + t for h, t in texts], add_special_tokens=False) if texts else []
            for i, (enc, (head, _)) in enumerate(zip(joined, texts, strict=True)):
                if len(enc.ids) <= self._budget:  # fits: exactly the ids of the whole text, as the model's code has
                    n_prompt = sum(1 for start, _ in enc.offsets if start < len(head))
                    out[i] = self._finish(self._wrap(enc.ids), None, n_prompt, len(enc.ids) - n_prompt, False)
        rest = [i for i, e in enumerate(out) if e is None]
        flat = [t for i in rest for t in texts[i]]
        encodings = self.tokenizer.encode_batch(flat, add_special_tokens=False) if flat else []
        for k, i in enumerate(rest):
            out[i] = self._assemble(encodings[2 * k], encodings[2 * k + 1])
        return [e for e in out if e is not None]

    def _wrap(self, ids: list[int]) -> list[int]:
        """A text's ids with the tokenizer's single-text specials, where the BOS policy adds them."""
        return [*self._prefix, *ids, *self._suffix] if self._specials else ids

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
        else:
            ids = self._wrap(prompt_ids + completion.ids)
        return self._finish(ids, type_ids, len(prompt_ids), len(completion.ids), truncated)

    def encode_text(self, text: str, add_special_tokens: bool = True) -> EncodedInput:
        """A whole text (prompt and reply already joined, e.g. a decoded rollout) as the model sees it.

        For adapters whose clients send one string (OpenRLHF's remote reward model, vLLM-style classify):
        no template is applied (a ``chat`` bundle's text is expected to be rendered already, step tags
        included), the tokenizer's single-text special tokens are added for ``pair``/``concat`` bundles and
        chat bundles whose BOS the tokenizer writes (a BOS at the text's start is then dropped, never doubled),
        and an over-long text is cut from the left so that its end, the reply, survives. ``add_special_tokens``
        False (vLLM's flag, for text that already carries them) skips the single-text specials; the card's
        suffix ids stay, since the score is read there.
        """
        if not isinstance(text, str):
            raise FormatError("text must be a string")
        spec = self.spec
        pair = spec.template == "pair"
        wrap = add_special_tokens and (pair or self._specials)
        if wrap and spec.template == "chat" and spec.bos == "tokenizer" and spec.bos_token \
                and text.startswith(spec.bos_token.token):
            text = text[len(spec.bos_token.token):]
        if spec.eos_recipe:
            text = self._with_eos(text)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        specials = (self.tokenizer.num_special_tokens_to_add(False) if pair else
                    len(self._prefix) + len(self._suffix)) if wrap else 0
        room = spec.max_length - specials - len(spec.suffix_ids)
        truncated = len(encoding.ids) > room
        if truncated:
            encoding.truncate(room, direction="left")
        if wrap and pair:
            encoding = self.tokenizer.post_process(encoding, add_special_tokens=True)
            ids, type_ids = encoding.ids, encoding.type_ids
        else:
            ids, type_ids = (self._wrap(encoding.ids) if wrap else encoding.ids), None
        return self._finish(ids, type_ids, 0, len(ids), truncated)

    def _finish(self, ids: list[int], type_ids: list[int] | None, n_prompt: int, n_completion: int,
                truncated: bool) -> EncodedInput:
        spec = self.spec
        if not ids and not spec.suffix_ids:
            raise FormatError("the input has no tokens to score (an empty text without special tokens)")
        if spec.eos_recipe == "openrlhf" and truncated:  # its recipe: a cut text still ends with EOS
            assert spec.eos_token is not None
            ids = [*ids[:-1], spec.eos_token.id]
        if spec.suffix_ids:
            ids = [*ids, *spec.suffix_ids]
            if type_ids is not None:
                type_ids = [*type_ids, *[type_ids[-1] if type_ids else 0] * len(spec.suffix_ids)]
        if spec.reads_own_last and spec.pad_token.id in ids:
            raise FormatError(
                f"the input contains the pad token {spec.pad_token.token!r}; the score position would be wrong"
            )
        if not spec.use_token_type_ids:
            type_ids = None
        return EncodedInput(ids, type_ids, n_prompt, n_completion, truncated, self._marks(ids, truncated))

    def _marks(self, ids: list[int], truncated: bool = False) -> tuple[int, ...]:
        """The gate's position (its pattern's last occurrence) or the step tags' positions, checked here so that
        an input the head cannot read is refused on its own, never in a batch with others."""
        spec = self.spec
        if spec.steps is not None:
            tags = tuple(i for i, t in enumerate(ids) if t == spec.steps.token.id)
            if not tags:
                cut = (" (the input was cut to its token limit, and its step tags with it: shorten it or raise "
                       "max_item_tokens)") if truncated else " (completions get one after each step)"
                raise FormatError(f"the input has no step tag {spec.steps.token.token!r}: a process reward model "
                                  f"scores the steps it tags{cut}")
            if len(tags) > spec.steps.max_steps:
                raise FormatError(f"the input has {len(tags)} steps; this model's card scores at most "
                                  f"{spec.steps.max_steps} (import with a larger --max-steps)")
            return tags
        pattern = list(spec.gate_pattern)
        if not pattern:
            return ()
        for start in range(len(ids) - len(pattern), -1, -1):
            if ids[start:start + len(pattern)] == pattern:
                return (start,)
        raise FormatError("the input has no assistant turn where this model's gate reads (its token pattern "
                          f"{pattern}); send a conversation in the model's chat format")


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
