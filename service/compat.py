"""Compatibility adapters (docs/design.md §4): OpenRLHF ``/get_reward``, vLLM-style ``/classify`` (verl), and
Cohere/Jina-style ``/v1/rerank`` and ``/v2/rerank``. Each translates its client's body into engine
inputs and calls the native path (:func:`~service.plumbing.score_for`), so limits, batching, metrics and
formatting are the same.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from service.answers import (
    ApiVersion,
    BilledUnits,
    ClassifyResponse,
    ClassifyResult,
    ClassifyUsage,
    CohereMeta,
    CohereRerankResponse,
    CohereResult,
    GetRewardResponse,
    RerankedDocument,
    Tokens,
)
from service.engine import ScoreCall, ScoreInput, WholeText
from service.errors import InvalidRequest
from service.plumbing import require_api_key, score_for, service_state
from service.schemas import ERROR_RESPONSES, ranked

compat = APIRouter(dependencies=[Depends(require_api_key)], tags=["compatibility"], responses=ERROR_RESPONSES)


def _served(request: Request, model: str | None) -> str | None:
    """An adapter's ``model`` when it names a served model, else None (the default model). These clients
    often send a fixed name of their own (Cohere's requires one), which must not turn into a 404."""
    return model if model in service_state(request).registry.entries else None


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward model request."""

    query: list[str] = Field(description="full decoded prompt+response texts")
    prompts: list[str] | None = Field(None, description="the prompt of each query; for a bundle without a chat "
                                                        "template, a prefix of it splits the query into (prompt, "
                                                        "completion); a chat bundle scores the rendered query whole")
    labels: list[Any] | None = Field(None, description="accepted and ignored (used by rule-based rewards)")


@compat.post("/get_reward", summary="OpenRLHF remote reward model")
async def get_reward(body: GetRewardRequest, request: Request, response: Response) -> GetRewardResponse:
    """``{"rewards", "scores", "extra_logs"}``: ``rewards`` (what PPO trains on) are normalized when the
    server's default says so; ``scores`` (what OpenRLHF logs and filters on) are always the raw rewards."""
    if body.prompts is not None and len(body.prompts) != len(body.query):
        raise InvalidRequest(f"'prompts' has {len(body.prompts)} entries for {len(body.query)} queries")
    inputs: list[ScoreInput] = []
    for i, text in enumerate(body.query):
        prompt = body.prompts[i] if body.prompts else ""
        inputs.append(WholeText(text, prompt_chars=len(prompt) if prompt and text.startswith(prompt) else 0))
    scored = await score_for(request, response, ScoreCall(inputs, field="query"))
    return GetRewardResponse(rewards=scored.scores, scores=scored.raw_scores)


class ClassifyRequest(BaseModel):
    """vLLM's ``/classify`` request (verl's reward loop sends this)."""

    model: str | None = None
    input: str | list[str]
    activation: bool = Field(False, description="true: probs = sigmoid(reward); false (what verl sends, and "
                                                "the default here): the raw reward")
    add_special_tokens: bool = Field(True, description="false: the text already carries the special tokens")


@compat.post("/classify", summary="vLLM-style classify (one score per text)")
async def classify(body: ClassifyRequest, request: Request, response: Response) -> ClassifyResponse:
    """Each text is scored whole, as the model sees it: a chat bundle's text must be rendered already."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    inputs = [WholeText(t, body.add_special_tokens) for t in texts]
    scored = await score_for(request, response, ScoreCall(inputs, field="input"), _served(request, body.model))
    scores = [0.5 * (1 + math.tanh(s / 2)) if body.activation else s for s in scored.scores]  # overflow-free sigmoid
    return ClassifyResponse(id=f"classify-{uuid.uuid4().hex}", created=int(time.time()), model=scored.model,
                            data=[ClassifyResult(index=i, probs=[s]) for i, s in enumerate(scores)],
                            usage=ClassifyUsage(prompt_tokens=scored.input_tokens, total_tokens=scored.input_tokens))


class Document(BaseModel):
    """A Cohere v2 / Jina document object."""

    text: str


class CohereRerankRequest(BaseModel):
    """Cohere/Jina rerank request: the query is the prompt, the documents the candidates."""

    model: str | None = None
    query: str
    documents: list[str | Document]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False


async def _cohere_rerank(body: CohereRerankRequest, request: Request, response: Response,
                         version: str) -> CohereRerankResponse:
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    scored = await score_for(request, response, ScoreCall([(body.query, t) for t in texts], field="documents"),
                             _served(request, body.model), rerank=True)
    results = [CohereResult(index=index, relevance_score=score,
                            document=RerankedDocument(text=texts[index]) if body.return_documents else None)
               for index, score in ranked(scored.scores, body.top_n)]
    return CohereRerankResponse(id=str(uuid.uuid4()), results=results,
                                meta=CohereMeta(api_version=ApiVersion(version=version),
                                                billed_units=BilledUnits(search_units=1),
                                                tokens=Tokens(input_tokens=scored.input_tokens, output_tokens=0)))


@compat.post("/v1/rerank", summary="Cohere v1 / Jina rerank", response_model_exclude_none=True)
async def rerank_v1(body: CohereRerankRequest, request: Request, response: Response) -> CohereRerankResponse:
    """Documents by reward, best first; ``relevance_score`` is the raw (or normalized) reward."""
    return await _cohere_rerank(body, request, response, "1")


@compat.post("/v2/rerank", summary="Cohere v2 rerank", response_model_exclude_none=True)
async def rerank_v2(body: CohereRerankRequest, request: Request, response: Response) -> CohereRerankResponse:
    """As ``/v1/rerank``."""
    return await _cohere_rerank(body, request, response, "2")
