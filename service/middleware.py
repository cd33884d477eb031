"""The one ASGI middleware: request ids, timing headers, body-size limit, request metrics, last-resort 500.

Pure ASGI (not ``BaseHTTPMiddleware``) so it does not buffer responses or break disconnect detection.
It runs outside FastAPI's exception handling, so even a bug's 500 carries the request id and is
counted. Handlers report their timings through ``request.state.timing``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.engine import Timing
from service.errors import error_body
from service.metrics import Metrics

log = logging.getLogger(__name__)

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"^[\w.:/+=-]{1,128}$")


class RequestContext:
    """Wraps every HTTP request; see the module docstring."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, endpoints: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._endpoints = endpoints
        """Paths used as metric labels; any other path is labelled ``other``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        sent = headers.get("x-request-id", "")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        timing = Timing()
        scope.setdefault("state", {}).update(request_id=request_id, timing=timing)
        path = scope["path"]
        endpoint = path if path in self._endpoints else "other"
        status = {"code": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                out = MutableHeaders(scope=message)
                out["x-request-id"] = request_id
                out["x-tokenization-time-ms"] = f"{timing.tokenize_s * 1000:.2f}"
                out["x-queue-time-ms"] = f"{timing.queue_s * 1000:.2f}"
                out["x-inference-time-ms"] = f"{timing.inference_s * 1000:.2f}"
                out["x-total-time-ms"] = f"{(time.perf_counter() - started) * 1000:.2f}"
            await send(message)

        tracked = endpoint not in PROBES
        if tracked:
            self.metrics.inflight.inc()
        try:
            body_receive = await self._limit_body(headers, receive)
            if body_receive is None:
                self.metrics.rejected.labels("payload_too_large").inc()
                await _send_json(send_with_headers, 413, error_body(
                    "payload_too_large", f"the request body is over the {self.max_body_bytes}-byte limit"))
            else:
                await self.app(scope, body_receive, send_with_headers)
        except Exception:  # a bug: answer in JSON with the id (if nothing was sent yet), log it with the id
            log.exception("unhandled error in request %s %s (request id %s)", scope["method"], path, request_id)
            if not status["started"]:
                await _send_json(send_with_headers, 500, error_body(
                    "internal_error", f"internal error; quote request id {request_id} when reporting it"))
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


async def _send_json(send: Send, status: int, body: Mapping[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
