"""Typed errors of the service: each class carries its HTTP status, headers and OpenAPI description.

Hierarchy (status in brackets; ``kind`` is the JSON error type, a class default a raiser may refine)::

    ServiceError                 base
    ├── InvalidRequest     [400] malformed or empty input, or input the card's formatting refuses
    ├── Unauthorized       [401] missing or wrong API key (WWW-Authenticate: Bearer)
    ├── Forbidden          [403] an admin endpoint while no admin key is configured
    ├── NotFound           [404] no such path, or no model of that name (model_not_found)
    ├── MethodNotAllowed   [405] the path exists, the method does not
    ├── PayloadTooLarge    [413] body, item count or token budget over the limits
    ├── SwapFailed         [409] a hot swap's new version did not load or failed its checks; the old one serves
    ├── ValidationFailed   [422] the body does not match the endpoint's schema
    ├── Overloaded         [429] its scores would be late, or too many items are queued (Retry-After: estimate)
    ├── ClientClosed       [499] the client went away; its queued items were dropped (nginx's code)
    ├── BackendFailure     [500] the backend failed or produced a non-finite score
    ├── InternalError      [500] a bug in the service (logged with the request id)
    ├── NotReady           [503] loading, draining, or unhealthy (Retry-After: 1)
    ├── DeadlineExceeded   [504] the request's deadline passed before its scores were ready
    ├── InsufficientMemory [507] a hot swap's new version would not fit beside the serving one
    ├── ModelsError        [500] the models file or --model flags are wrong (at start: the server does not start)
    └── StageError         [its own] a mounted stage's error (feedback: 409 conflict, 503 feedback_unavailable)

Adding an error is adding a class here: the one handler (:mod:`service.error_handling`) reads
``status`` and ``headers()`` from it, and the OpenAPI schema reads ``description``. Foreign exceptions
(onnxruntime, torch) are translated to :class:`BackendFailure` at the backend boundary.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the service's errors."""

    kind = "error"
    status = 500
    description = "error"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind:
            self.kind = kind

    def headers(self) -> dict[str, str]:
        """Response headers this error adds."""
        return {}


class InvalidRequest(ServiceError):
    """The request is malformed, empty, or its input cannot be formatted under the card's rules."""

    kind = "invalid_request"
    status = 400
    description = ("malformed or empty input (invalid_json, invalid_request, invalid_input), criteria asked of a "
                   "model without them (no_criteria, invalid_weights), or a user's personal reward of a model "
                   "without basis heads (no_personalization)")


class Unauthorized(ServiceError):
    """API keys are configured and the request has none, or a wrong one."""

    kind = "unauthorized"
    status = 401
    description = "missing or wrong API key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    """The endpoint is switched off by configuration."""

    kind = "forbidden"
    status = 403
    description = "the endpoint is off (admin endpoints need REWARDSERVE_ADMIN_KEYS)"


class NotFound(ServiceError):
    """No route has this path, or no model this name."""

    kind = "not_found"
    status = 404
    description = "no such path, or no model of that name (model_not_found)"


class SwapFailed(ServiceError):
    """A hot swap did not happen; the old version keeps serving."""

    kind = "swap_failed"
    status = 409
    description = "the new version did not load or failed its checks; the old version keeps serving"


class InsufficientMemory(ServiceError):
    """A swap would not fit beside the serving version."""

    kind = "insufficient_memory"
    status = 507
    description = "loading the new version beside the serving one would exceed the memory available"


class ModelsError(ServiceError):
    """The models file or ``--model`` flags are wrong: the server does not start, or a SIGHUP keeps the old ones."""

    kind = "invalid_models"
    status = 500
    description = "the models configuration is wrong"


class MethodNotAllowed(ServiceError):
    """A route has this path, but not this method."""

    kind = "method_not_allowed"
    status = 405
    description = "the path does not take this method"


class PayloadTooLarge(ServiceError):
    """The request passes a size limit (body bytes, items, tokens)."""

    kind = "payload_too_large"
    status = 413
    description = "over a size limit (payload_too_large, too_many_items, too_many_tokens)"


class ValidationFailed(ServiceError):
    """The body is JSON but does not match the endpoint's schema."""

    kind = "validation_error"
    status = 422
    description = "schema violation"


class Overloaded(ServiceError):
    """Its scores would likely not be ready before its deadline, or admitting it would pass ``max_queue_items``;
    retry after ``retry_after_s`` seconds."""

    kind = "overloaded"
    status = 429
    description = "overloaded; retry after Retry-After seconds"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ClientClosed(ServiceError):
    """The client disconnected before its scores were ready (nobody reads this answer)."""

    kind = "client_closed_request"
    status = 499
    description = "the client disconnected first"


class BackendFailure(ServiceError):
    """The backend raised, or returned something other than one finite score per item."""

    kind = "backend_error"
    status = 500
    description = "backend failure (backend_error) or a bug (internal_error, logged with the request id)"


class InternalError(ServiceError):
    """A bug: an exception nothing translated. The answer names the request id the log has."""

    kind = "internal_error"
    status = 500
    description = BackendFailure.description


class NotReady(ServiceError):
    """The model is not loaded and warmed yet, the process is draining, or it is unhealthy."""

    kind = "not_ready"
    status = 503
    description = "not ready: loading (not_ready, load_failed), shutting down (draining), or unhealthy"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}

    @classmethod
    def unhealthy(cls, reason: str) -> NotReady:
        """The process can no longer serve (``/healthz`` is 503 too: restart it), saying why."""
        return cls(f"the server is unhealthy: {reason}", kind="unhealthy")


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its scores were ready."""

    kind = "deadline_exceeded"
    status = 504
    description = "the request's deadline passed before its scores were ready"


class StageError(ServiceError):
    """An error a mounted stage raised (the feedback store's), answered with the status and headers it carries."""

    def __init__(self, message: str, kind: str, status: int, headers: dict[str, str]) -> None:
        super().__init__(message, kind)
        self.status = status
        self._headers = headers

    def headers(self) -> dict[str, str]:
        return self._headers


DOCUMENTED: tuple[type[ServiceError], ...] = (
    InvalidRequest, Unauthorized, PayloadTooLarge, ValidationFailed, Overloaded, BackendFailure, NotReady,
    DeadlineExceeded,
)
"""The errors a scoring endpoint can answer with, for its OpenAPI ``responses``."""


def error_body(kind: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error shape of docs/design.md §4."""
    return {"error": {"type": kind, "message": message}}
