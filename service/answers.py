"""Response bodies of the adapters, ``/v1/models``, the probes and ``/admin``, as pydantic models.

Their shapes are what outside clients parse (OpenRLHF, verl, Cohere's and Jina's SDKs, OpenAI-style model
lists), so they are declared rather than left as dicts: the OpenAPI document shows them, and the fuzz tests
check every answer against it. Native ``/score`` and ``/rerank`` bodies are in :mod:`service.schemas`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class GetRewardResponse(BaseModel):
    """OpenRLHF's remote reward answer."""

    rewards: list[float] = Field(description="what PPO trains on: normalized when the server's default says so")
    scores: list[float] = Field(description="the raw rewards (what OpenRLHF logs and filters on)")
    extra_logs: dict[str, Any] = Field(default_factory=dict)


class ClassifyResult(BaseModel):
    """One text's score, as vLLM's ``/classify`` answers it."""

    index: int
    label: Literal["reward"] = "reward"
    probs: list[float] = Field(description="one value: the reward, or sigmoid(reward) with 'activation'")
    num_classes: Literal[1] = 1


class ClassifyUsage(BaseModel):
    """Tokens, OpenAI-style."""

    prompt_tokens: int
    total_tokens: int
    completion_tokens: Literal[0] = 0


class ClassifyResponse(BaseModel):
    """vLLM's ``/classify`` answer."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ClassifyResult]
    usage: ClassifyUsage


class RerankedDocument(BaseModel):
    """A document echoed back with ``return_documents``."""

    text: str


class CohereResult(BaseModel):
    """One document by its reward."""

    index: int
    relevance_score: float
    document: RerankedDocument | None = Field(None, description="with 'return_documents' only")


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Tokens(BaseModel):
    input_tokens: int
    output_tokens: int


class CohereMeta(BaseModel):
    """Cohere's ``meta``."""

    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: Tokens


class CohereRerankResponse(BaseModel):
    """Cohere/Jina rerank answer: documents best first."""

    id: str
    results: list[CohereResult]
    meta: CohereMeta


class Limits(BaseModel):
    """The request limits every model shares."""

    max_items_per_request: int
    max_request_tokens: int
    max_body_bytes: int


class ModelDetails(BaseModel):
    """What rewardserve says of a served name. Besides the fields below: a version's card, engine and runtime
    (``version``, ``card_name``, ``backend``, ``variant``, ``personalization``, …), an ensemble's ``ensemble``
    (aggregate and members), or a split's ``split`` (weights and target versions)."""

    model_config = ConfigDict(extra="allow")

    default: bool = Field(description="answers requests that name no model")
    shadow: str | None = Field(description="the model scoring this one's traffic in the background")
    limits: Limits


class ModelInfo(BaseModel):
    """One served name, OpenAI-style."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: Literal["rewardserve"] = "rewardserve"
    version: str | None = Field(description="content id of what serves (none for a split: see its targets)")
    rewardserve: ModelDetails


class ModelList(BaseModel):
    """``/v1/models``: every name a request may give, the default first."""

    object: Literal["list"] = "list"
    data: list[ModelInfo]


class Status(BaseModel):
    """A probe's answer."""

    status: Literal["ok", "ready"]


class Replaced(BaseModel):
    """The version a swap replaced."""

    version: str
    answered_after_switch: int = Field(description="requests it answered after the switch, before its release")
    released: bool


class Swapped(BaseModel):
    """``PUT /admin/models/{name}``'s answer, sent once the old version is released."""

    model: str
    version: str
    previous: Replaced | None = Field(description="none when the name served nothing before")
