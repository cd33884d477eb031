"""Native endpoints: ``/score``, ``/rerank``, probes, ``/metrics``, ``/v1/models`` — thin: translate, call
the engine, translate back. Routes never import onnxruntime or torch.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service.engine import Scored, ScoreInput
from service.errors import ClientClosed, NotReady, Unauthorized
from service.metrics import CONTENT_TYPE
from service.schemas import (
    ERROR_RESPONSES,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ScoreRequest,
    ScoreResponse,
    Usage,
    as_prompt,
    ranked,
)
from service.state import ServiceState

STARTED = int(time.time())


def service_state(request: Request) -> ServiceState:
    """The app's :class:`ServiceState`."""
    return request.app.state.service  # type: ignore[no-any-return]


async def require_api_key(request: Request) -> None:
    """With API keys configured, a request needs ``Authorization: Bearer <key>`` matching one of them.

    ``async`` although it never awaits: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hop per request that cost ~10% of the event loop's time under many one-pair requests."""
    keys = service_state(request).settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare against every key without stopping early: the time taken says nothing about the keys
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token.strip().encode(), key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")


async def score_for(request: Request, inputs: Sequence[ScoreInput], normalize: bool | None) -> Scored:
    """Score ``inputs`` for this request; if the client disconnects first, its queued items are dropped."""
    state = service_state(request)
    engine = state.require_engine()
    wanted = state.settings.normalize if normalize is None else normalize
    work = asyncio.ensure_future(engine.score(inputs, wanted, request.state.timing))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, gone):
            if not task.done():
                task.cancel()  # cancelling the work cancels its job in the scheduler
    if not work.done():
        raise ClientClosed("the client disconnected before its scores were ready")
    return work.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _guard(setting: str) -> Any:
    """A dependency asking for an API key on an operational endpoint when ``setting`` says so."""

    async def check(request: Request) -> None:
        if getattr(service_state(request).settings, setting):
            await require_api_key(request)

    return Depends(check)


router = APIRouter(responses={503: ERROR_RESPONSES[503]})
scoring = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@scoring.post("/score", response_model=ScoreResponse, response_model_exclude_none=True,
              summary="Score (prompt, completion) items")
async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
    """One reward per item, in order."""
    scored = await score_for(request, [item.to_input() for item in body.items], body.normalize)
    return ScoreResponse(scores=scored.scores, raw_scores=scored.raw_scores if scored.normalized else None,
                         normalized=scored.normalized, model=service_state(request).model_name, usage=Usage.of(scored))


@scoring.post("/rerank", response_model=RerankResponse, summary="Rank candidate completions of one prompt")
async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
    """Candidates best first; identical candidates are scored once."""
    prompt = as_prompt(body.prompt)
    scored = await score_for(request, [(prompt, c) for c in body.completions], body.normalize)
    results = [RerankResult(index=i, score=s) for i, s in ranked(scored.scores, body.top_k)]
    return RerankResponse(results=results, best_index=results[0].index, model=service_state(request).model_name,
                          usage=Usage.of(scored))


@scoring.get("/v1/models", summary="The served model (OpenAI-style list)")
async def models(request: Request) -> dict[str, Any]:
    """The card's summary, the backend, and the limits a client should respect."""
    state = service_state(request)
    card, s, info = state.card, state.settings, state.backend_info
    report = card.training.get("result", {}).get("report", {})
    return {"object": "list", "data": [{
        "id": state.model_name, "object": "model", "created": STARTED, "owned_by": "rewardserve",
        "rewardserve": {
            "base_model": card.base_model, "architecture": card.architecture, "model_type": card.model_type,
            "backend": s.backend, "variant": s.variant, "device": s.device,
            "runtime": None if info is None else {"dtype": info.dtype, "detail": info.detail},
            "max_length": state.formatter.spec.max_length, "template": card.formatting.template,
            "normalization": None if card.normalization is None else {
                "mean": card.normalization.mean, "std": card.normalization.std},
            "heldout_accuracy": report.get("accuracy"), "onnx_variants": sorted(card.onnx),
            "limits": {"max_items_per_request": s.max_items_per_request, "max_request_tokens": s.max_request_tokens,
                       "max_body_bytes": s.max_body_bytes},
        },
    }]}


@router.get("/healthz", summary="Liveness: the process is up and its backend usable",
            dependencies=[_guard("protect_health")])
async def healthz(request: Request) -> dict[str, str]:
    """200 while alive; 503 when the model failed to load or the device failed (restart the pod)."""
    state = service_state(request)
    if state.load_error:
        raise NotReady(state.load_error, kind="load_failed")
    if state.backend is not None:
        await asyncio.to_thread(state.backend.health)
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: loaded, warmed up, not draining", dependencies=[_guard("protect_health")])
async def readyz(request: Request) -> dict[str, str]:
    """200 when requests will be served; 503 before and while draining."""
    service_state(request).require_engine()
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus metrics", dependencies=[_guard("protect_metrics")],
            response_class=Response, responses={200: {"content": {"text/plain": {}}, "description": "exposition"}})
async def metrics(request: Request) -> Response:
    """The exposition text of DESIGN §6's metrics."""
    return Response(service_state(request).metrics.render(), media_type=CONTENT_TYPE)
