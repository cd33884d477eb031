"""The feedback stage as the service runs it: the store, the threads that talk to it, its metrics, the profile
refitter, and the live items queued for labeling; one per app, closed with it.

The database work runs on this stage's own threads, never on the event loop or the threads scoring uses, so a
slow or absent database delays only feedback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from feedback.errors import FeedbackError
from feedback.events import FeedbackAccepted, FeedbackBatch, utc_now
from feedback.loop_metrics import LoopMetrics
from feedback.metrics import FeedbackMetrics
from feedback.profiles import Refitter, Targets, load_profile
from feedback.queue import LabelQueue, LabelTask
from feedback.stats import feedback_stats
from feedback.store import FeedbackStore, Filters, redact
from rewardmodel.personal import Profile

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITER_THREADS = 4
"""Concurrent database transactions of one process (SQLite serializes writers anyway; PostgreSQL takes them)."""
PROFILE_THREADS = 2
"""Concurrent profile lookups (a primary-key read each, on the path of personal requests)."""


class FeedbackService:
    """The store, the threads that talk to it, and the metrics; one per app, closed with it."""

    def __init__(self, store: FeedbackStore, registry: CollectorRegistry, targets: Targets | None = None) -> None:
        """``targets``: the served models with basis heads, whose users' profiles are refitted after new
        judgements (None: none are)."""
        self.store = store
        self.metrics = FeedbackMetrics(registry)
        self._writers = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="feedback-write")
        # stats read the whole window: on their own thread, so they never hold up writes
        self._readers = ThreadPoolExecutor(1, thread_name_prefix="feedback-read")
        # profile lookups are on the scoring path: threads of their own, never behind stats or writes
        self._profiles = ThreadPoolExecutor(PROFILE_THREADS, thread_name_prefix="feedback-profile")
        self.refitter = None if targets is None else Refitter(store, targets, self.run, self.metrics.profile_fits)
        self.loop = LoopMetrics(registry, store, self._readers)
        self._pending: set[asyncio.Task[int]] = set()
        """Live items being queued for labeling (the loop keeps only weak references to tasks)."""

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
        if self.refitter is not None:
            self.refitter.stored(new)
        # counts and ids only: stored text never reaches the logs
        log.debug("stored %d feedback events (%d duplicates)", len(new), len(batch.events) - len(new))
        return FeedbackAccepted(accepted=len(new), duplicates=len(batch.events) - len(new))

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` on a writer thread (the queue's reads and writes)."""
        return await asyncio.get_running_loop().run_in_executor(self._writers, lambda: work(*args))

    async def profile(self, user: str, basis: str) -> Profile | None:
        """The user's profile on the heads ``basis`` names (None: not fitted yet)."""
        return await asyncio.get_running_loop().run_in_executor(self._profiles, load_profile, self.store, user, basis)

    async def stats(self, filters: Filters) -> dict[str, Any]:
        """:func:`~feedback.stats.feedback_stats` on the reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, feedback_stats, self.store, filters)

    def close(self) -> None:
        """Finish the writes in flight (they were acknowledged or are about to be), then close the pool."""
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._profiles.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def prepare(self) -> None:
        """Migrate the store's schema at start; a database that is down now only delays feedback (503 until back)."""
        try:
            await asyncio.to_thread(self.store.migrate)
            log.info("feedback store ready: %s", redact(self.store.url))
        except FeedbackError as exc:
            log.warning("the feedback store is unavailable (POST /feedback answers 503 until it is back): %s",
                        exc.message)

    def live_push(self, queue: LabelQueue) -> Callable[[Any, list[str], float], None]:
        """Queue a live item (prompt, completions, priority) for labeling in the background: answering the
        request never waits for the database, and a failure only loses that sample (logged without its text)."""

        def push(prompt: Any, completions: list[str], priority: float) -> None:
            try:
                task = LabelTask(prompt=prompt, completions=completions, source="live", priority=priority)
            except ValidationError:
                return  # e.g. a prompt the event rules refuse: not worth a human's time
            job = asyncio.get_running_loop().create_task(self.run(queue.add, [task], utc_now()))
            self._pending.add(job)
            job.add_done_callback(self._queued)

        return push

    def _queued(self, job: asyncio.Task[int]) -> None:
        self._pending.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.warning("a live item was not queued for labeling: %s", type(job.exception()).__name__)
