"""``create_app``: the FastAPI application around one bundle, with the one place errors become HTTP.

The card and tokenizer are read here, synchronously, so a bad bundle fails before the server listens;
the backend loads in the background (see :mod:`service.state`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from rewardmodel import read_card
from service.compat import compat
from service.errors import NotReady, Overloaded, ServiceError, Unauthorized, error_body, status_of
from service.metrics import Metrics
from service.middleware import RequestContext
from service.routes import router, scoring
from service.settings import ServiceSettings
from service.state import ServiceState

log = logging.getLogger(__name__)

_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed"}


def create_app(settings: ServiceSettings, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The service for ``settings.model``; ``on_fatal`` is called if the backend then fails to load."""
    if settings.model is None:
        raise ServiceError("no model to serve: pass --model DIR (or set REWARDSERVE_MODEL)")
    root = Path(settings.model)
    metrics = Metrics()
    state = ServiceState(settings, root, read_card(root), metrics, on_fatal)

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

    app = FastAPI(title="rewardserve", version=_version(),
                  description="Reward-model scoring for RL trainers and best-of-n reranking.", lifespan=lifespan)
    app.state.service = state
    app.include_router(scoring)
    app.include_router(compat)
    app.include_router(router)
    _install_error_handlers(app, metrics)
    # metric labels: known paths only, so that scanners probing random URLs cannot explode cardinality
    paths = {getattr(r, "path", "") for rt in (scoring, compat, router) for r in rt.routes}
    endpoints = frozenset(paths | {"/docs", "/openapi.json"})
    app.add_middleware(RequestContext, metrics=metrics, max_body_bytes=settings.max_body_bytes, endpoints=endpoints)
    return app


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error leaves as DESIGN §4's JSON; 4xx/503/504 are counted as rejections by type."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(exc.retry_after_s)
        elif isinstance(exc, NotReady):
            headers["Retry-After"] = "1"
        elif isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        if status >= 500 and status not in (503, 504):
            log.error("request %s failed: %s", getattr(request.state, "request_id", "?"), exc.message)
        else:
            metrics.rejected.labels(exc.kind).inc()
        return JSONResponse(error_body(exc.kind, exc.message), status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            kind, status = "invalid_json", 400
            message = "the body is not valid JSON: " + "; ".join(str(e.get("ctx", {}).get("error", "")) for e in errors)
        else:
            kind, status = "validation_error", 422
            message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:10])
        metrics.rejected.labels(kind).inc()
        return JSONResponse(error_body(kind, message), status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind, message = _HTTP_KINDS.get(exc.status_code, "http_error"), str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not decode the body at all (bad UTF-8, nesting too deep)
            kind, message = "invalid_json", "the body could not be decoded as JSON (invalid UTF-8, or nested too deep)"
        if exc.status_code < 500:
            metrics.rejected.labels(kind).inc()
        return JSONResponse(error_body(kind, message), exc.status_code, headers=exc.headers)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rewardserve")
    except PackageNotFoundError:
        return "0+unknown"
