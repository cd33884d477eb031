"""Request and response bodies of the native endpoints (docs/design.md §4), as pydantic models.

They generate the OpenAPI schema at ``/docs`` and reject schema violations with 422 before any work is
done. Semantic checks that need the model (empty lists, limits, formatting) happen in the engine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from rewardmodel import Prompt, RewardModelError
from rewardmodel.conversation import split_conversation
from service.engine import Scored, ScoreInput
from service.errors import DOCUMENTED, InvalidRequest, NotFound, ServiceError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatMessage(_Strict):
    """One chat turn."""

    role: str = Field(description="system, user or assistant")
    content: str


PromptValue = str | list[ChatMessage]


def as_prompt(prompt: PromptValue) -> Prompt:
    """The contract's prompt form: a string, or a list of ``{"role", "content"}`` dicts."""
    return prompt if isinstance(prompt, str) else [m.model_dump() for m in prompt]


class ScoreItem(_Strict):
    """A (prompt, completion) pair, or a conversation whose last message is the assistant reply to score."""

    prompt: PromptValue | None = Field(None, description="text, or chat messages before the reply")
    completion: str | None = Field(None, description="the reply to score")
    messages: list[ChatMessage] | None = Field(None, description="a whole conversation ending with the reply")

    @model_validator(mode="after")
    def _one_form(self) -> ScoreItem:
        pair_fields = self.prompt is not None or self.completion is not None
        if (self.messages is not None) == pair_fields or (pair_fields and None in (self.prompt, self.completion)):
            raise ValueError("an item is either {'prompt', 'completion'} or {'messages'}")
        return self

    def to_input(self) -> ScoreInput:
        """The engine's input form; a conversation is split into (prompt messages, final reply)."""
        if self.messages is not None:
            try:
                return split_conversation([m.model_dump() for m in self.messages])
            except RewardModelError as exc:  # not ending with an assistant turn, bad roles
                raise InvalidRequest(str(exc), kind="invalid_input") from exc
        assert self.prompt is not None and self.completion is not None
        return as_prompt(self.prompt), self.completion


class _Criteria(_Strict):
    model: str | None = Field(None, description="which served model scores (GET /v1/models lists them); default: "
                                                "the first")
    details: bool = Field(False, description="an ensemble: also return each item's member scores and their std")
    criteria: bool = Field(False, description="a criteria model: also return each item's score per criterion")
    # strict: JSON's true or "0.5" is not a weight
    weights: dict[str, StrictFloat | StrictInt] | None = Field(
        None, description="a criteria model: weights of the reward's criteria (names left out keep the card's); "
                          "finite numbers")
    user: str | None = Field(None, min_length=1, max_length=256,
                             description="score with this user's (or group's) personal reward: their profile, fitted "
                                         "from their feedback (metadata.user), or the population's while they have "
                                         "too few judgements; the x-rewardserve-user header says the same")


class ScoreRequest(_Criteria):
    """``POST /score``."""

    items: list[ScoreItem] = Field(description="what to score; order is preserved")
    normalize: bool | None = Field(None, description="centre scores with the card's normalization; default: "
                                                     "the server's setting")


class Usage(BaseModel):
    """What a request cost."""

    input_tokens: int = Field(description="tokens the model read, after truncation")
    truncated_items: int = Field(description="items cut to the token limit")

    @classmethod
    def of(cls, scored: Scored) -> Usage:
        """Usage of a scored request."""
        return cls(input_tokens=scored.input_tokens, truncated_items=scored.truncated_items)


class PersonalAnswer(BaseModel):
    """Whose reward scored a personal request."""

    user: str
    profile: Literal["personal", "population"] = Field(
        description="personal: the user's own weights; population: theirs are not fitted yet (too few judgements, "
                    "or none), so this is the plain reward")
    judgements: int = Field(description="the pairs the user's profile was fitted from")

    @classmethod
    def of(cls, scored: Scored) -> PersonalAnswer | None:
        """The answer's ``personal`` field (None: not a personal request)."""
        return None if scored.personal is None else cls.model_validate(scored.personal)


class ScoreResponse(BaseModel):
    """Scores in item order."""

    scores: list[float]
    raw_scores: list[float] | None = Field(None, description="the rewards before normalization; only present "
                                                             "when normalized")
    normalized: bool
    criteria: list[dict[str, float]] | None = Field(None, description="per-criterion scores in item order, when "
                                                                      "asked for")
    details: list[dict[str, object]] | None = Field(None, description="an ensemble's member scores and their std "
                                                                      "per item, when asked for")
    step_scores: list[list[float]] | None = Field(None, description="a process reward model: each item's step "
                                                                   "rewards in step order (its score is their "
                                                                   "minimum, last or mean, as its card says)")
    model: str = Field(description="the model that scored (a split's chosen target); its version is in the "
                                   "x-model-version header")
    usage: Usage
    personal: PersonalAnswer | None = Field(None, description="a personal request: whose reward scored")


class RerankRequest(_Criteria):
    """``POST /rerank``: candidates for one prompt (best-of-n)."""

    prompt: PromptValue
    completions: list[str] = Field(description="candidate replies; identical ones are scored once")
    top_k: int | None = Field(None, ge=1, description="return only the best k")
    normalize: bool | None = None


class RerankResult(BaseModel):
    """One candidate's score."""

    index: int = Field(description="position in the request's completions")
    score: float
    criteria: dict[str, float] | None = Field(None, description="per-criterion scores, when asked for")
    members: dict[str, float] | None = Field(None, description="an ensemble's member scores, when asked for")
    std: float | None = Field(None, description="their std across members")
    step_scores: list[float] | None = Field(None, description="a process reward model: the step rewards")


class RerankResponse(BaseModel):
    """Candidates best first (ties keep request order)."""

    results: list[RerankResult]
    best_index: int
    model: str = Field(description="the model that scored; its version is in the x-model-version header")
    usage: Usage
    personal: PersonalAnswer | None = Field(None, description="a personal request: whose reward scored")


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str = Field(description="machine-readable kind, e.g. overloaded, too_many_items, validation_error")
    message: str = Field(description="what to do about it")


class ErrorResponse(BaseModel):
    """Every error answer (docs/design.md §4)."""

    error: ErrorDetail


_SCORING_ERRORS: tuple[type[ServiceError], ...] = (*DOCUMENTED, NotFound)
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    error.status: {"model": ErrorResponse, "description": error.description}
    for error in _SCORING_ERRORS}
"""The error answers of the scoring endpoints, for the OpenAPI schema."""


def ranked(scores: list[float], top_k: int | None = None) -> list[tuple[int, float]]:
    """(index, score) best first, ties in input order, cut to ``top_k``."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return [(i, scores[i]) for i in order[:top_k]]
