"""The one place errors become HTTP answers.

Every error answer, whoever raises it (a route, FastAPI's validation, Starlette's routing, the
middleware's body limit, the feedback stage, a bug), is a :class:`~service.errors.ServiceError` by the
time it leaves, and :func:`error_response` turns it into docs/design.md §4's JSON with the status and headers
the error class carries. It also counts refusals in ``rewardserve_rejected_total`` and logs 5xx failures with the
request id.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from feedback.errors import FeedbackError
from service.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    StageError,
    ValidationFailed,
    error_body,
)
from service.metrics import Metrics

log = logging.getLogger(__name__)


def error_response(exc: ServiceError, metrics: Metrics, request_id: str) -> JSONResponse:
    """``exc`` as an HTTP answer; refusals are counted by kind, server-side failures logged with the id."""
    if exc.status >= 500 and exc.status not in (503, 504):
        log.error("request %s failed: %s", request_id, exc.message)
    else:
        metrics.rejected.labels(exc.kind).inc()
    return JSONResponse(error_body(exc.kind, exc.message), exc.status, headers=exc.headers())


def _translate_validation(exc: RequestValidationError) -> ServiceError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        # FastAPI puts the decoder's position (a character offset) after "body" in the location
        reasons = "; ".join(str(e.get("ctx", {}).get("error", "")) + "".join(
            f" at character {p}" for p in e.get("loc", ())[1:2] if isinstance(p, int)) for e in errors)
        return InvalidRequest(f"the body is not valid JSON: {reasons}", kind="invalid_json")
    if any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes | str) for e in errors):
        # a body FastAPI did not parse: it only parses one whose Content-Type is JSON
        return InvalidRequest("the body was not read as JSON: send it with 'Content-Type: application/json'",
                              kind="invalid_json")
    return ValidationFailed("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:10]))


def _translate_http(exc: HTTPException) -> ServiceError:
    if exc.status_code == 404:
        return NotFound(f"no such path: {exc.detail}" if exc.detail != "Not Found" else "no such path")
    if exc.status_code == 405:
        return MethodNotAllowed("this path does not take this method")
    if exc.status_code == 400:  # FastAPI could not decode the body at all (bad UTF-8, nesting too deep)
        return InvalidRequest("the body could not be decoded as JSON (invalid UTF-8, or nested too deep)",
                              kind="invalid_json")
    other = ServiceError(str(exc.detail), kind="http_error")  # no route of ours raises any other code
    other.status = exc.status_code
    return other


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Route every error FastAPI and Starlette raise through :func:`error_response`."""

    def request_id(request: Request) -> str:
        return str(getattr(request.state, "request_id", "?"))

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, metrics, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_translate_validation(exc), metrics, request_id(request))

    @app.exception_handler(FeedbackError)
    async def feedback_error(request: Request, exc: FeedbackError) -> JSONResponse:
        return error_response(StageError(exc.message, exc.kind, exc.status, exc.headers()), metrics,
                              request_id(request))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(_translate_http(exc), metrics, request_id(request))
