"""Typed errors of the service and the one table that maps them to HTTP status codes.

Hierarchy::

    ServiceError                 base; ``kind`` is the JSON error type, ``status`` comes from STATUS
    ├── InvalidRequest           400 malformed or empty input, or input the card's formatting refuses
    ├── PayloadTooLarge          413 body, item count or token budget over the limits
    ├── Unauthorized             401 missing or wrong API key
    ├── Overloaded               429 too many items in the system (carries Retry-After)
    ├── NotReady                 503 model still loading / warming up, or the process is draining
    ├── DeadlineExceeded         504 the request's deadline passed while its items were queued
    ├── BackendFailure           500 the backend failed or produced a non-finite score (a real bug)
    └── ClientClosed             499 the client went away; its queued items were dropped (nginx's code)

The scheduler and backends raise these; foreign exceptions (onnxruntime, torch) are translated to
:class:`BackendFailure` at the backend boundary. FastAPI's own validation errors become 422 in ``app``.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the service's errors; ``kind`` names the error in the JSON body."""

    kind = "error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind:
            self.kind = kind


class InvalidRequest(ServiceError):
    """The request is malformed, empty, or its input cannot be formatted under the card's rules."""

    kind = "invalid_request"


class PayloadTooLarge(ServiceError):
    """The request passes a size limit (body bytes, items, tokens)."""

    kind = "payload_too_large"


class Unauthorized(ServiceError):
    """API keys are configured and the request has none, or a wrong one."""

    kind = "unauthorized"


class Overloaded(ServiceError):
    """Admitting the request would pass ``max_queue_items``; retry after ``retry_after_s`` seconds."""

    kind = "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ServiceError):
    """The model is not loaded and warmed yet, or the process is shutting down."""

    kind = "not_ready"


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its items reached the backend."""

    kind = "deadline_exceeded"


class BackendFailure(ServiceError):
    """The backend raised, or returned something other than one finite score per item."""

    kind = "backend_error"


class ClientClosed(ServiceError):
    """The client disconnected before its scores were ready."""

    kind = "client_closed_request"


STATUS: dict[type[ServiceError], int] = {
    InvalidRequest: 400,
    PayloadTooLarge: 413,
    Unauthorized: 401,
    Overloaded: 429,
    NotReady: 503,
    DeadlineExceeded: 504,
    BackendFailure: 500,
    ClientClosed: 499,
}


def status_of(error: ServiceError) -> int:
    """HTTP status of ``error`` (its nearest class in :data:`STATUS`)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error shape of DESIGN §4."""
    return {"error": {"type": kind, "message": message}}
