"""The scoring engine: request inputs → tokenized items → scheduler → scores, with the request limits.

What every endpoint shares lives here, so the routes stay thin translations: item-count and token
limits, tokenization on a thread pool (never on the event loop), identical items scored once, the
card's normalization, usage accounting and per-request timings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from rewardmodel import EncodedInput, Formatter, Normalization, Prompt, RewardModelError
from rewardmodel.criteria import check_weights
from rewardmodel.head import OutputLayout
from rewardmodel.personal import BasisHeads
from service.admission import Work
from service.errors import InvalidRequest, PayloadTooLarge
from service.scheduler import Scheduler


@dataclass(frozen=True)
class WholeText:
    """An already-joined prompt+reply text, scored as the model sees it (no template applied)."""

    text: str
    add_special_tokens: bool = True
    prompt_chars: int = 0
    """Where the prompt ends, when the client said (OpenRLHF's ``prompts``): the text is then scored as (prompt,
    completion) under the card's template, unless the prompt is the chat template's rendering already (an RL
    trainer that applied the template sends that), when it is scored whole."""

    def split(self) -> tuple[str, str] | None:
        """(prompt, completion) as the client split it, or None."""
        return (self.text[:self.prompt_chars], self.text[self.prompt_chars:]) if self.prompt_chars else None


ScoreInput = tuple[Prompt, str] | WholeText
"""A (prompt, completion) pair formatted by the card's rules, or a whole text."""


@dataclass(frozen=True)
class Personal:
    """Whose reward a request asks for, and the profile it stands on."""

    user: str
    weights: tuple[float, ...] | None = None
    """The user's weights on the basis heads (None: the population's, the plain reward)."""
    judgements: int = 0
    """The pairs the weights were fitted from."""

    @property
    def profile(self) -> Literal["personal", "population"]:
        """personal: the user's own weights; population: theirs are not fitted yet (the plain reward)."""
        return "population" if self.weights is None else "personal"

    def answer(self) -> dict[str, Any]:
        """What the response says of it."""
        return {"user": self.user, "profile": self.profile, "judgements": self.judgements}


@dataclass(frozen=True)
class ScoreCall:
    """One scoring request as every layer below the route sees it."""

    inputs: Sequence[ScoreInput]
    normalize: bool | None = None
    """Centre with the card's normalization (None: the server's setting, resolved before the engine)."""
    field: str = "items"
    """The request's name for the inputs, in errors."""
    criteria: bool = False
    """A criteria model: return each item's score per criterion."""
    weights: dict[str, float] | None = None
    """A criteria model: the reward's criteria weights (None: the card's)."""
    details: bool = False
    """An ensemble: return each item's member scores."""
    user: str | None = None
    """Score with this user's personal reward (:mod:`rewardmodel.personal`)."""
    personal: Personal | None = None
    """The user's profile, looked up before the call reaches the engine."""


@dataclass(frozen=True)
class Timings:
    """Where one request's time went; the HTTP layer turns it into ``x-*-time-ms`` headers."""

    tokenize_s: float
    queue_s: float
    inference_s: float

    def headers(self) -> dict[str, str]:
        """The ``x-*-time-ms`` response headers of these timings."""
        return {"x-tokenization-time-ms": f"{self.tokenize_s * 1000:.2f}",
                "x-queue-time-ms": f"{self.queue_s * 1000:.2f}",
                "x-inference-time-ms": f"{self.inference_s * 1000:.2f}"}


@dataclass(frozen=True)
class Scored:
    """Scores of one request's items in order, and what it cost."""

    scores: list[float]
    normalized: bool
    input_tokens: int
    truncated_items: int
    raw_scores: list[float]
    """The model's rewards before normalization (equal to ``scores`` when not normalized)."""
    timings: Timings
    criteria: list[dict[str, float]] | None = None
    """A criteria model's per-criterion scores of each item, when asked for."""
    model: str = ""
    """The name that scored (a split's target, not the split)."""
    version: str = ""
    """The content id of what scored (``x-model-version``)."""
    details: list[dict[str, Any]] | None = None
    """An ensemble's per-item member scores and their std, when asked for."""
    lengths: list[int] | None = None
    """Completion tokens of each item (the monitors read them)."""
    truncated_flags: list[bool] | None = None
    """Whether each item was cut to the token limit."""
    disagreement: list[float] | None = None
    """An ensemble's per-item std across members."""
    steps: list[list[float]] | None = None
    """A process reward model's step rewards of each item."""
    personal: dict[str, Any] | None = None
    """Whose reward scored: the user, their profile (personal or population) and its judgements."""


@dataclass(frozen=True)
class RequestLimits:
    """Per-request limits (413 beyond them) and the deadline (504)."""

    max_items: int
    max_tokens: int
    timeout_s: float


class UsageObserver(Protocol):
    """Counts what was scored (the service's metrics implement it)."""

    def scored(self, items: int, tokens: int, truncated: int, personal: str = "none") -> None:
        """One request's items were scored (``personal``: none, personal or population)."""

    def shifted(self, shifts: Sequence[float]) -> None:
        """How far a personal request's rewards moved from the population's, per item."""


class Engine:
    """Scores inputs under the card's formatting through one :class:`Scheduler`."""

    def __init__(self, formatter: Formatter, scheduler: Scheduler, limits: RequestLimits,
                 normalization: Normalization | None, tokenizer_threads: int,
                 observer: UsageObserver | None = None, layout: OutputLayout | None = None,
                 basis: BasisHeads | None = None) -> None:
        self.formatter = formatter
        self.basis = basis
        """The bundle's basis heads for personal rewards (None: it has none)."""
        self._layout = layout
        self._criteria = layout.criteria if layout else None
        self.scheduler = scheduler
        self._limits = limits
        self._normalization = normalization
        self._observer = observer
        self._pool = ThreadPoolExecutor(tokenizer_threads, thread_name_prefix="rewardserve-tokenize")

    async def score(self, call: ScoreCall) -> Scored:
        """Scores of ``call.inputs`` in order, with a criteria model's per-criterion scores when asked, its reward
        weighted by the call's weights when given, or the user's personal reward; raises the service's typed
        errors."""
        inputs, field, normalize = call.inputs, call.field, bool(call.normalize)
        criteria, weights, personal = call.criteria, call.weights, call.personal
        vector = self._weights(criteria, weights, normalize)
        if personal is not None:
            self._check_personal(weights)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.timeout_s
        if not inputs:
            raise InvalidRequest(f"'{field}' is empty: there is nothing to score")
        if len(inputs) > self._limits.max_items:
            raise PayloadTooLarge(f"{len(inputs)} {field} in one request; the limit is {self._limits.max_items}. "
                                  "Split the request (the Python client does this for you).", kind="too_many_items")
        if normalize and self._normalization is None:
            raise InvalidRequest("normalize was asked for, but this bundle's card records no normalization "
                                 "(mean/std); send normalize=false")
        self.scheduler.admit(Work(0, 0), deadline)  # under overload, refuse before spending time tokenizing
        started = time.perf_counter()
        encoded = await loop.run_in_executor(self._pool, self._encode, inputs)
        tokenize_s = time.perf_counter() - started
        tokens = sum(len(e.input_ids) for e in encoded)
        if tokens > self._limits.max_tokens:
            raise PayloadTooLarge(f"the request holds {tokens} tokens after truncation; the limit is "
                                  f"{self._limits.max_tokens}", kind="too_many_tokens")
        unique, index = _dedupe(encoded)
        # rows only for a fitted profile: a user on the population's weights gets the plain reward
        job = self.scheduler.submit(unique, deadline, rows=personal is not None and personal.weights is not None)
        result = await self.scheduler.wait(job)
        outputs = result.scores[index]
        if outputs.ndim == 1:
            outputs = outputs[:, None]
        raw = self._layout.reward(outputs, vector) if self._layout else outputs[:, 0]
        if personal is not None:
            raw = self._personal_reward(personal, result.rows, index, raw)
        scores = raw
        if normalize:
            assert self._normalization is not None
            scores = (raw - self._normalization.mean) / self._normalization.std
        truncated = sum(e.truncated for e in encoded)
        if self._observer:
            self._observer.scored(len(encoded), tokens, truncated, "none" if personal is None else personal.profile)
        per_criterion = None
        if criteria and self._layout is not None and self._layout.criteria is not None:
            names = self._layout.criteria.names
            per_criterion = [{n: float(v) for n, v in zip(names, row, strict=True)}
                             for row in self._layout.criteria_outputs(outputs)]
        steps = self._layout.steps(outputs, [len(e.marks) for e in encoded]) if self._layout else None
        return Scored([float(s) for s in scores], normalize, tokens, truncated, [float(r) for r in raw],
                      Timings(tokenize_s, result.queue_s, result.inference_s), per_criterion,
                      lengths=[e.completion_tokens for e in encoded], truncated_flags=[e.truncated for e in encoded],
                      steps=steps, personal=None if personal is None else personal.answer())

    async def read_rows(self, inputs: Sequence[ScoreInput]) -> np.ndarray:
        """``(n, H)``: the read rows of ``inputs`` (what a user's profile is fitted on), through the scheduler like
        any request, so refitting shares the batches and the admission of the traffic."""
        if (why := self.scheduler.rows_error) is not None:
            raise InvalidRequest(why, kind="no_personalization")
        loop = asyncio.get_running_loop()
        parts = []
        for start in range(0, len(inputs), self._limits.max_items):  # a request's worth at a time
            deadline = loop.time() + self._limits.timeout_s
            encoded = await loop.run_in_executor(self._pool, self._encode, inputs[start:start + self._limits.max_items])
            unique, index = _dedupe(encoded)
            result = await self.scheduler.wait(self.scheduler.submit(unique, deadline, rows=True))
            assert result.rows is not None, "the scheduler returns rows for a job that asks for them"
            parts.append(result.rows[index])
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def _check_personal(self, weights: dict[str, float] | None) -> None:
        """400 for a personal request this model cannot answer."""
        if self.basis is None:
            raise InvalidRequest("this model has no basis heads for personal rewards: fit them with `rewardserve "
                                 "personalize fit`, or leave out 'user'", kind="no_personalization")
        if (why := self.scheduler.rows_error) is not None:
            raise InvalidRequest(f"this model cannot serve personal rewards on its engine: {why}",
                                 kind="no_personalization")
        if weights is not None:
            raise InvalidRequest("a personal reward weighs the user's own profile; leave out 'weights' or 'user'",
                                 kind="invalid_weights")

    def _personal_reward(self, personal: Personal, rows: np.ndarray | None, index: np.ndarray,
                         plain: np.ndarray) -> np.ndarray:
        """The user's reward of each item (the population's, the plain reward, without a profile)."""
        if personal.weights is None:
            return plain
        assert self.basis is not None and rows is not None, "the scheduler returns rows for a personal job"
        read = rows[index]
        mine = self.basis.reward(read, personal.weights)
        if self._observer:  # against the population's reward of the same rows: what the profile alone moved
            self._observer.shifted(np.abs(mine - self.basis.reward(read, self.basis.population)).tolist())
        return mine

    def _weights(self, criteria: bool, weights: dict[str, float] | None, normalize: bool) -> list[float] | None:
        """The request's reward weights in output order (None: the card's); 400 for what this model lacks."""
        if self._criteria is None:
            if criteria or weights is not None:
                raise InvalidRequest("this model scores no criteria: it has one output, the reward; leave out "
                                     "'criteria' and 'weights'", kind="no_criteria")
            return None
        if weights is None:
            return None
        try:
            checked = check_weights(weights, self._criteria.names)
        except ValueError as exc:
            raise InvalidRequest(str(exc), kind="invalid_weights") from None
        if normalize:
            raise InvalidRequest("normalize centres the reward of the card's weights (its mean and std); send "
                                 "normalize=false with your own weights", kind="invalid_weights")
        return self._criteria.weight_vector(checked)

    def _encode(self, inputs: Sequence[ScoreInput]) -> list[EncodedInput]:
        pairs: list[tuple[int, tuple[Prompt, str]]] = []
        for i, x in enumerate(inputs):
            if not isinstance(x, WholeText):
                pairs.append((i, x))
            elif (split := x.split()) is not None and not self.formatter.is_rendered(split[0]):
                pairs.append((i, split))
        out: list[EncodedInput | None] = [None] * len(inputs)
        try:
            for (i, _), enc in zip(pairs, self.formatter.encode_many([p for _, p in pairs]), strict=True):
                out[i] = enc
            for i, x in enumerate(inputs):
                if out[i] is None and isinstance(x, WholeText):
                    out[i] = self.formatter.encode_text(x.text, x.add_special_tokens)
        except RewardModelError as exc:
            raise InvalidRequest(str(exc), kind="invalid_input") from exc
        return [e for e in out if e is not None]

    def close(self) -> None:
        """Stop the tokenizer threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _dedupe(encoded: Sequence[EncodedInput]) -> tuple[list[EncodedInput], np.ndarray]:
    """(unique inputs, index of each input's unique copy): identical model inputs are scored once."""
    seen: dict[tuple[tuple[int, ...], tuple[int, ...] | None], int] = {}
    unique: list[EncodedInput] = []
    index = np.empty(len(encoded), dtype=np.int64)
    for i, enc in enumerate(encoded):
        key = (tuple(enc.input_ids), None if enc.token_type_ids is None else tuple(enc.token_type_ids))
        if key not in seen:
            seen[key] = len(unique)
            unique.append(enc)
        index[i] = seen[key]
    return unique, index
