"""``POST /feedback`` and ``GET /feedback/stats``: the router the service mounts.

The database work runs on this stage's own threads (:class:`FeedbackService`), never on the event loop
or the threads scoring uses, so a slow or absent database delays only feedback. The service gives the
router its dependencies (API keys, the drain's accounting) and the shape of its error answers; this
package imports no other stage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, params
from prometheus_client import CollectorRegistry

from feedback.events import FeedbackAccepted, FeedbackBatch, utc_now
from feedback.metrics import FeedbackMetrics
from feedback.stats import feedback_stats
from feedback.store import FeedbackStore, Filters

log = logging.getLogger(__name__)

WRITER_THREADS = 4
"""Concurrent database transactions of one process (SQLite serializes writers anyway; PostgreSQL takes them)."""


class FeedbackService:
    """The store, the threads that talk to it, and the metrics; one per app, closed with it."""

    def __init__(self, store: FeedbackStore, registry: CollectorRegistry) -> None:
        self.store = store
        self.metrics = FeedbackMetrics(registry)
        self._writers = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="feedback-write")
        # stats read the whole window: on their own thread, so they never hold up writes
        self._readers = ThreadPoolExecutor(1, thread_name_prefix="feedback-read")

    async def add(self, batch: FeedbackBatch) -> FeedbackAccepted:
        """Store the batch (all or nothing); answer only after the commit."""
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(self._writers, self.store.add, batch.events, utc_now())
        new, seen = [], set()
        for e in batch.events:
            if e.id in stored and e.id not in seen:
                new.append(e)
                seen.add(e.id)
        self.metrics.stored(new)
        # counts and ids only: stored text never reaches the logs
        log.debug("stored %d feedback events (%d duplicates)", len(new), len(batch.events) - len(new))
        return FeedbackAccepted(accepted=len(new), duplicates=len(batch.events) - len(new))

    async def stats(self, filters: Filters) -> dict[str, Any]:
        """:func:`~feedback.stats.feedback_stats` on the reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, feedback_stats, self.store, filters)

    def close(self) -> None:
        """Finish the writes in flight (they were acknowledged or are about to be), then close the pool."""
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def feedback_router(service: FeedbackService, dependencies: Sequence[params.Depends],
                    responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    """The routes, behind ``dependencies`` (the service's key check and admission), documenting ``responses``."""
    router = APIRouter(dependencies=list(dependencies), responses=responses, tags=["feedback"])

    @router.post("/feedback", response_model=FeedbackAccepted, summary="Store human judgements of completions")
    async def post_feedback(body: FeedbackBatch) -> FeedbackAccepted:
        """Store a batch of events, all or nothing. An event's ``id`` is its idempotency key: resending it
        with the same content counts as a duplicate; with other content it is a 409 ``conflict``."""
        return await service.add(body)

    @router.get("/feedback/stats", summary="Counts, inter-annotator agreement and live accuracy")
    async def get_stats(since: Annotated[datetime | None, Query(description="RFC 3339; judged from then")] = None,
                        until: Annotated[datetime | None, Query(description="RFC 3339; judged before then")] = None,
                        source: Annotated[str | None, Query(max_length=64, description="only this source")] = None,
                        ) -> dict[str, Any]:
        """What ``rewardserve feedback stats`` prints, for the events in the window."""
        return await service.stats(Filters(since=since, until=until, source=source))

    return router
