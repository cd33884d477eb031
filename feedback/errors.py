"""Typed errors of the feedback stage; each carries its HTTP status, JSON type and headers.

Hierarchy (status in brackets)::

    FeedbackError                base (a bug if it escapes untranslated: 500)
    ├── InvalidFeedback    [422] an event breaks the event rules (names the event's index and field)
    ├── UnknownTask        [404] no labeling task with that id
    ├── Conflict           [409] an event id is already stored with different content
    └── FeedbackUnavailable [503] the database cannot be reached or is busy (Retry-After)

The service maps these to its JSON errors in its one error handler; the CLI prints the message and exits 2.
Database exceptions (SQLAlchemy, the drivers) are translated to :class:`FeedbackUnavailable` in
:mod:`feedback.store`, the one place that talks to the database; nothing else sees them.
"""

from __future__ import annotations

RETRY_AFTER_S = 2
"""What a 503 ``feedback_unavailable`` tells clients to wait: a restarting database is usually back soon."""


class FeedbackError(Exception):
    """Base of the feedback stage's errors."""

    kind = "feedback_error"
    status = 500
    description = "a bug in the feedback stage"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Response headers this error adds."""
        return {}


class InvalidFeedback(FeedbackError):
    """An event (or a command's argument) breaks the rules; the message names where and which field."""

    kind = "validation_error"
    status = 422
    description = "an event breaks the event rules (the message names its index and field)"


class UnknownTask(FeedbackError):
    """A labeling submission names a task the queue does not hold."""

    kind = "unknown_task"
    status = 404
    description = "no labeling task with that id"


class Conflict(FeedbackError):
    """An id is stored already with other content: ids are the client's idempotency keys."""

    kind = "conflict"
    status = 409
    description = "an event id is stored already with different content; nothing of the batch was stored"


class FeedbackUnavailable(FeedbackError):
    """The feedback database cannot take the write now; nothing of the batch was stored."""

    kind = "feedback_unavailable"
    status = 503
    description = "the feedback database is unavailable; nothing of the batch was stored: retry after Retry-After"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S)}


DOCUMENTED: tuple[type[FeedbackError], ...] = (Conflict, FeedbackUnavailable)
"""The errors of ``POST /feedback`` beyond the service's own, for its OpenAPI ``responses``."""
