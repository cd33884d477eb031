"""The one ASGI middleware: request ids, timing headers, draining, body-size limit, lone surrogates in JSON text,
request metrics, last-resort 500.

Pure ASGI (not ``BaseHTTPMiddleware``) so it does not buffer responses or break disconnect detection.
It runs outside FastAPI's exception handling, so even a bug's 500 carries the request id and is
counted. Handlers set their own ``x-tokenization/queue/inference-time-ms`` headers from the timings the
engine returns; this layer adds ``x-total-time-ms`` and zeros where a handler set none (an error answer).
While the process drains, every answer carries ``Connection: close``, so clients open a new connection
(to another replica) for their next request instead of reusing one that is about to close.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.error_handling import error_response
from service.errors import InternalError, InvalidRequest, PayloadTooLarge
from service.json_text import lone_surrogate
from service.metrics import Metrics

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
DOC_PAGES = frozenset({"/docs", "/redoc"})
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
"""The doc pages may load nothing from elsewhere: their assets are served here (air-gapped clusters), and
ReDoc's sidebar would otherwise fetch its logo from a CDN on every view."""
TIMING_HEADERS = ("x-tokenization-time-ms", "x-queue-time-ms", "x-inference-time-ms")
_REQUEST_ID = re.compile(r"^[\w.:/+=-]{1,128}$")


class RequestContext:
    """Wraps every HTTP request; see the module docstring."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, endpoints: frozenset[str],
                 draining: Callable[[], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._endpoints = endpoints
        """Paths used as metric labels; any other path is labelled ``other``."""
        self._draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        sent = headers.get("x-request-id", "")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope["path"]
        endpoint = path if path in self._endpoints else "other"
        status = {"code": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                out = MutableHeaders(scope=message)
                out["x-request-id"] = request_id
                for name in TIMING_HEADERS:
                    out.setdefault(name, "0.00")
                out["x-total-time-ms"] = f"{(time.perf_counter() - started) * 1000:.2f}"
                if self._draining():
                    out["connection"] = "close"
                if path in DOC_PAGES:
                    out["content-security-policy"] = DOCS_POLICY
            await send(message)

        tracked = endpoint not in PROBES
        if tracked:
            self.metrics.inflight.inc()
        try:
            body_receive = await self._limit_body(headers, receive)
            refusal: InvalidRequest | PayloadTooLarge | None = None
            if body_receive is None:
                refusal = PayloadTooLarge(f"the request body is over the {self.max_body_bytes}-byte limit")
            elif scope["method"] in ("POST", "PUT", "PATCH") and "json" in headers.get("content-type", "json"):
                body_receive, where = await _json_text(body_receive)
                if where is not None:
                    refusal = InvalidRequest(f"{where} holds a lone UTF-16 surrogate escape (such as \\ud800 "
                                             "without its pair), which is no Unicode text", kind="invalid_json")
            if refusal is not None:
                await error_response(refusal, self.metrics, request_id)(scope, receive, send_with_headers)
            else:
                assert body_receive is not None
                await self.app(scope, body_receive, send_with_headers)
        except Exception:  # a bug: answer in JSON with the id (if nothing was sent yet), log it with the id
            log.exception("unhandled error in request %s %s (request id %s)", scope["method"], path, request_id)
            if not status["started"]:
                bug = InternalError(f"internal error; quote request id {request_id} when reporting it")
                await error_response(bug, self.metrics, request_id)(scope, receive, send_with_headers)
        finally:
            if tracked:
                self.metrics.inflight.dec()
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.perf_counter() - started)

    async def _limit_body(self, headers: Headers, receive: Receive) -> Receive | None:
        """``receive`` if the body is within the limit (read up front when its length is not declared)."""
        declared = headers.get("content-length")
        if declared is not None:
            return receive if declared.isdigit() and int(declared) <= self.max_body_bytes else None
        if "chunked" not in headers.get("transfer-encoding", ""):
            return receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            more = message.get("more_body", False)
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replaying() -> Message:
            return replay.pop() if replay else await receive()

        return replaying


async def _json_text(receive: Receive) -> tuple[Receive, str | None]:
    """The body read in full (its size is already within the limit; the endpoint reads it all anyway), where it
    holds a lone surrogate (:mod:`service.json_text`), and a ``receive`` that replays it."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return receive, None  # the client left; the endpoint sees the disconnect
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replaying() -> Message:
        return replay.pop() if replay else await receive()

    return replaying, lone_surrogate(body)
