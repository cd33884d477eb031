"""Native endpoints: ``/score``, ``/rerank``, probes, ``/metrics``, ``/v1/models`` — thin: translate, call
the engine (through :mod:`service.plumbing`), translate back. Routes never import onnxruntime or torch.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request, Response

from service.answers import Limits, ModelDetails, ModelInfo, ModelList, Status
from service.engine import ScoreCall
from service.errors import BackendFailure, NotReady
from service.metrics import CONTENT_TYPE
from service.plumbing import guard, require_api_key, score_for, service_state
from service.schemas import (
    ERROR_RESPONSES,
    PersonalAnswer,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ScoreRequest,
    ScoreResponse,
    Usage,
    as_prompt,
    ranked,
)

STARTED = int(time.time())


router = APIRouter(responses={503: ERROR_RESPONSES[503]})
scoring = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@scoring.post("/score", response_model=ScoreResponse, response_model_exclude_none=True,
              summary="Score (prompt, completion) items")
async def score(body: ScoreRequest, request: Request, response: Response) -> ScoreResponse:
    """One reward per item, in order."""
    call = ScoreCall([item.to_input() for item in body.items], body.normalize, criteria=body.criteria,
                     weights=body.weights, details=body.details, user=body.user)
    scored = await score_for(request, response, call, body.model)
    return ScoreResponse(scores=scored.scores, raw_scores=scored.raw_scores if scored.normalized else None,
                         normalized=scored.normalized, criteria=scored.criteria, details=scored.details,
                         step_scores=scored.steps, model=scored.model, usage=Usage.of(scored),
                         personal=PersonalAnswer.of(scored))


@scoring.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True,
              summary="Rank candidate completions of one prompt")
async def rerank(body: RerankRequest, request: Request, response: Response) -> RerankResponse:
    """Candidates best first; identical candidates are scored once."""
    prompt = as_prompt(body.prompt)
    call = ScoreCall([(prompt, c) for c in body.completions], body.normalize, "completions", body.criteria,
                     body.weights, body.details, body.user)
    scored = await score_for(request, response, call, body.model, rerank=True)
    results = [RerankResult(index=i, score=s, criteria=scored.criteria[i] if scored.criteria else None,
                            members=scored.details[i]["members"] if scored.details else None,
                            std=scored.details[i]["std"] if scored.details else None,
                            step_scores=scored.steps[i] if scored.steps else None)
               for i, s in ranked(scored.scores, body.top_k)]
    return RerankResponse(results=results, best_index=results[0].index, model=scored.model, usage=Usage.of(scored),
                          personal=PersonalAnswer.of(scored))


@scoring.get("/v1/models", summary="The served models (OpenAI-style list)")
async def models(request: Request) -> ModelList:
    """Every model a request may name, first the default: its version (a content id), card summary,
    backend and limits; an ensemble lists its members, a split its targets."""
    state = service_state(request)
    s = state.settings
    limits = Limits(max_items_per_request=s.max_items_per_request, max_request_tokens=s.max_request_tokens,
                    max_body_bytes=s.max_body_bytes)
    return ModelList(data=[ModelInfo(id=name, created=STARTED, version=version,
                                     rewardserve=ModelDetails(**about, limits=limits))
                           for name, version, about in state.registry.describe()])


@router.get("/healthz", summary="Liveness: the process is up and able to serve", dependencies=[guard("protect_health")])
async def healthz(request: Request) -> Status:
    """200 while alive; 503 saying why when the model failed to load, the batcher or the backend thread died,
    a batch is stuck, or the device failed: restart the process."""
    state = service_state(request)
    state.ensure_alive()
    for version in state.registry.versions():
        if version.backend is not None:
            try:
                await asyncio.to_thread(version.backend.health)
            except BackendFailure as exc:
                raise NotReady.unhealthy(f"{version.label}: {exc.message}") from exc
    return Status(status="ok")


@router.get("/readyz", summary="Readiness: loaded, warmed up, not draining", dependencies=[guard("protect_health")])
async def readyz(request: Request) -> Status:
    """200 when requests will be served; 503 before and while draining."""
    service_state(request).require_ready()
    return Status(status="ready")


@router.get("/metrics", summary="Prometheus metrics", dependencies=[guard("protect_metrics")],
            response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "exposition"}})
async def metrics(request: Request) -> Response:
    """The exposition text of docs/design.md §6's metrics."""
    # on a thread: the monitors compute their windows' figures during the scrape, off the event loop
    return Response(await asyncio.to_thread(service_state(request).metrics.render), media_type=CONTENT_TYPE)
