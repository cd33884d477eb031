"""``create_app``: the FastAPI application around the served models: routers, error handlers, middleware, lifespan.

The cards and tokenizers are read here, synchronously, so a bad bundle fails before the server listens;
the backends load in the background (see :mod:`service.state`). With ``feedback_db`` set, the feedback
stage's router is mounted too: the one place the service reaches into another stage, as its composer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi_offline import FastAPIOffline

from feedback.errors import FeedbackError
from service.admin import admin
from service.backends import load_backend
from service.collect import LiveSampler
from service.compat import compat
from service.error_handling import install_error_handlers
from service.errors import Forbidden, InvalidRequest, PayloadTooLarge, ServiceError, Unauthorized, ValidationFailed
from service.hooks import CollectHook, Hook, MonitorHook
from service.metrics import Metrics
from service.middleware import RequestContext
from service.models_file import Entry, entries_from_flags, read_models_file
from service.monitors import Monitors
from service.plumbing import admit_write, require_annotator, require_feedback_key
from service.routes import router, scoring
from service.schemas import ErrorResponse
from service.settings import ServiceSettings
from service.shadow import Shadows
from service.state import BackendLoader, ServiceState

if TYPE_CHECKING:
    from feedback.profiles import Targets
    from feedback.queue import LabelQueue
    from feedback.service import FeedbackService

def create_app(settings: ServiceSettings, on_fatal: Callable[[str], None] | None = None,
               load: BackendLoader = load_backend) -> FastAPI:
    """The service for ``settings.model`` (or its models file); ``on_fatal`` is called if a backend then fails to load.

    ``load`` builds the backend (the settings' onnxruntime or torch one); tests pass one that wraps it to
    inject faults into a real server."""
    metrics = Metrics()
    # profiles are refitted on the served models (state, bound below: the refitter asks only once serving)
    feedback = _feedback(settings, metrics, lambda: state.personal_targets())
    queue = None if feedback is None else _label_queue(feedback, settings)
    hooks: list[Hook] = []
    monitors = None
    if settings.monitors:
        monitors = Monitors(metrics.registry, settings.monitor_window_items, settings.monitor_max_runs)
        hooks.append(MonitorHook(monitors))
    if feedback is not None and queue is not None and settings.collect_for_labeling:
        hooks.append(CollectHook(LiveSampler(settings.collect_rate, settings.collect_per_hour,
                                             feedback.live_push(queue))))
    hooks.append(Shadows(metrics, lambda: state.draining))
    state = ServiceState(settings, served_entries(settings), metrics, on_fatal, load,
                         None if feedback is None else feedback.profile, hooks,
                         monitors.forget if monitors is not None else lambda name, version: None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # loading runs beside the server so that /healthz answers while a large model loads
        loading = asyncio.create_task(state.start())
        preparing = None if feedback is None else asyncio.create_task(feedback.prepare())
        try:
            yield
        finally:
            state.begin_drain()
            await loading
            if feedback is not None and feedback.refitter is not None:
                await feedback.refitter.idle()  # refits read rows on the served models: before they go
            await state.stop()
            if feedback is not None and preparing is not None:
                await preparing
                await asyncio.to_thread(feedback.close)

    # /docs and /redoc from assets the package ships: clusters are often air-gapped, and FastAPI's pages load
    # Swagger UI, ReDoc and fonts from a CDN (blank pages offline)
    app = FastAPIOffline(title="rewardserve", version=_version(),
                         description="Reward-model scoring for RL trainers and best-of-n reranking.", lifespan=lifespan)
    app.state.service = state
    routers = [scoring, compat, router, admin]
    if feedback is not None and queue is not None:
        routers += _feedback_routers(feedback, queue, lambda: _page_criteria(state))
    for r in routers:
        app.include_router(r)
    install_error_handlers(app, metrics)
    # metric labels: known paths only, so that scanners probing random URLs cannot explode cardinality
    paths = {getattr(r, "path", "") for rt in routers for r in rt.routes}
    endpoints = frozenset(paths | {"/docs", "/redoc", "/openapi.json"})
    app.add_middleware(RequestContext, metrics=metrics, max_body_bytes=settings.max_body_bytes, endpoints=endpoints,
                       draining=lambda: state.draining)
    return app


def served_entries(settings: ServiceSettings) -> list[Entry]:
    """What ``settings`` say to serve: the models file's entries, or the ``--model`` flags'."""
    if settings.models_file is not None:
        return read_models_file(settings.models_file)
    if not settings.model:
        raise ServiceError("no model to serve: pass --model DIR (or set REWARDSERVE_MODEL), or --models-file FILE")
    return entries_from_flags(settings.model, settings.model_name)


def _feedback(settings: ServiceSettings, metrics: Metrics, targets: Targets) -> FeedbackService | None:
    """The feedback stage when a database is configured (its packages are imported only then); ``targets`` are
    the served models whose users' profiles it refits."""
    if settings.feedback_db is None:
        return None
    from feedback.service import FeedbackService
    from feedback.store import FeedbackStore

    return FeedbackService(FeedbackStore(settings.feedback_db), metrics.registry, targets)


def _label_queue(feedback: FeedbackService, settings: ServiceSettings) -> LabelQueue:
    from feedback.queue import LabelQueue

    return LabelQueue(feedback.store, settings.label_annotations)


def _feedback_routers(feedback: FeedbackService, queue: LabelQueue,
                      criteria: Callable[[], dict[str, Any] | None]) -> list[APIRouter]:
    """``/feedback`` and the labeling routes, behind the service's keys and the drain's accounting, documenting
    the service's error answers."""
    from feedback.errors import DOCUMENTED as FEEDBACK_ERRORS
    from feedback.router import feedback_router, label_router

    documented: list[type[ServiceError] | type[FeedbackError]] = [
        InvalidRequest, Unauthorized, PayloadTooLarge, ValidationFailed, *FEEDBACK_ERRORS]
    responses: dict[int | str, dict[str, Any]] = {
        e.status: {"model": ErrorResponse, "description": e.description} for e in documented}
    keyed = [Depends(require_feedback_key), Depends(admit_write)]
    label_responses = {**responses, 403: {"model": ErrorResponse, "description": Forbidden.description}}
    return [feedback_router(feedback, keyed, responses),
            label_router(feedback, queue, keyed, [Depends(admit_write)], require_annotator, label_responses, criteria)]


def _page_criteria(state: ServiceState) -> dict[str, Any] | None:
    """The default model's criteria for the labeling page's sliders: their names and one rating scale (the
    card's, when its criteria share one; else 1-5), or None for a one-output model or before it loaded."""
    if not state.started:
        return None
    criteria = state.default.card.criteria
    if criteria is None:
        return None
    scales = {s for s in criteria.scales.values() if s is not None}
    return {"names": list(criteria.names), "scale": list(scales.pop() if len(scales) == 1 else (1, 5))}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rewardserve")
    except PackageNotFoundError:
        return "0+unknown"
