"""``create_app``: the FastAPI application around one bundle: routers, error handlers, middleware, lifespan.

The card and tokenizer are read here, synchronously, so a bad bundle fails before the server listens;
the backend loads in the background (see :mod:`service.state`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from rewardmodel import read_card
from service.backends import load_backend
from service.compat import compat
from service.error_handling import install_error_handlers
from service.errors import ServiceError
from service.metrics import Metrics
from service.middleware import RequestContext
from service.routes import router, scoring
from service.settings import ServiceSettings
from service.state import BackendLoader, ServiceState

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings, on_fatal: Callable[[str], None] | None = None,
               load: BackendLoader = load_backend) -> FastAPI:
    """The service for ``settings.model``; ``on_fatal`` is called if the backend then fails to load.

    ``load`` builds the backend (the settings' onnxruntime or torch one); tests pass one that wraps it to
    inject faults into a real server."""
    if settings.model is None:
        raise ServiceError("no model to serve: pass --model DIR (or set REWARDSERVE_MODEL)")
    root = Path(settings.model)
    metrics = Metrics()
    state = ServiceState(settings, root, read_card(root), metrics, on_fatal, load)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # loading runs beside the server so that /healthz answers while a large model loads
        loading = asyncio.create_task(state.start())
        try:
            yield
        finally:
            state.draining = True
            await loading
            await state.stop()

    # /docs and /redoc from assets the package ships: clusters are often air-gapped, and FastAPI's pages load
    # Swagger UI, ReDoc and fonts from a CDN (blank pages offline)
    app = FastAPIOffline(title="rewardserve", version=_version(),
                         description="Reward-model scoring for RL trainers and best-of-n reranking.", lifespan=lifespan)
    app.state.service = state
    app.include_router(scoring)
    app.include_router(compat)
    app.include_router(router)
    install_error_handlers(app, metrics)
    # metric labels: known paths only, so that scanners probing random URLs cannot explode cardinality
    paths = {getattr(r, "path", "") for rt in (scoring, compat, router) for r in rt.routes}
    endpoints = frozenset(paths | {"/docs", "/redoc", "/openapi.json"})
    app.add_middleware(RequestContext, metrics=metrics, max_body_bytes=settings.max_body_bytes, endpoints=endpoints,
                       draining=lambda: state.draining)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rewardserve")
    except PackageNotFoundError:
        return "0+unknown"
