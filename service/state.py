"""The app's lifecycle: load the backend off the event loop, warm it up, serve, drain.

``/healthz`` is up as soon as the process listens; ``/readyz`` says ready only after the backend is
loaded and has run warm-up batches (first batches allocate memory arenas and, on GPUs, pick kernels),
and goes back to 503 the moment draining starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from rewardmodel import BundleCard, Formatter, load_tokenizer, pad_batch
from rewardmodel.scoring import width_of
from service.backends import Backend, BackendInfo, load_backend
from service.batching import BatchLimits
from service.engine import Engine, RequestLimits
from service.errors import NotReady, ServiceError
from service.metrics import Metrics
from service.scheduler import Scheduler
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

BackendLoader = Callable[[Path, BundleCard, ServiceSettings], Backend]
"""Builds the backend for a bundle (:func:`~service.backends.load_backend`, or a test's wrapper of it)."""


def serving_formatter(root: Path, card: BundleCard, settings: ServiceSettings) -> Formatter:
    """The card's formatter, with ``max_item_tokens`` (when set) lowering its max_length."""
    spec = card.formatting
    if settings.max_item_tokens and settings.max_item_tokens < spec.max_length:
        spec = replace(spec, max_length=settings.max_item_tokens)
    if spec.max_length > settings.max_batch_tokens:
        raise ServiceError(f"the card's max_length {spec.max_length} exceeds max_batch_tokens "
                           f"{settings.max_batch_tokens}: a full-length item could never run. Raise "
                           "max_batch_tokens or set max_item_tokens.")
    return Formatter(load_tokenizer(root), spec)


class ServiceState:
    """The model, the engine once loaded, and the readiness flags; one per app."""

    def __init__(self, settings: ServiceSettings, root: Path, card: BundleCard, metrics: Metrics,
                 on_fatal: Callable[[str], None] | None = None, load: BackendLoader = load_backend) -> None:
        self.settings = settings
        self.root = root
        self.card = card
        self.metrics = metrics
        self.model_name = settings.model_name or card.name
        self.formatter = serving_formatter(root, card, settings)
        self.engine: Engine | None = None
        self.backend: Backend | None = None
        self.draining = False
        self.load_error: str | None = None
        self.admitted = 0
        """Scoring and feedback requests admitted and not yet answered: the drain waits for them."""
        self._on_fatal = on_fatal
        self._load = load
        metrics.track_readiness(lambda: self.engine is not None and not self.draining and self.health() is None)

    @property
    def backend_info(self) -> BackendInfo | None:
        """What the loaded backend is."""
        return self.backend.info if self.backend else None

    def health(self) -> str | None:
        """Why this process can no longer serve (``/healthz`` answers 503: restart it), or ``None``."""
        if self.load_error:
            return self.load_error
        return None if self.engine is None else self.engine.scheduler.health()

    def ensure_alive(self) -> None:
        """Raise :class:`NotReady` (``load_failed`` or ``unhealthy``) if this process can no longer serve."""
        if self.load_error:
            raise NotReady(self.load_error, kind="load_failed")
        if self.engine is not None and (reason := self.engine.scheduler.health()) is not None:
            raise NotReady.unhealthy(reason)

    def require_engine(self) -> Engine:
        """The engine, or :class:`NotReady` while draining, after a failed load, unhealthy, or while loading."""
        if self.draining:
            raise NotReady("the server is shutting down; retry (another replica will answer)", kind="draining")
        self.ensure_alive()
        if self.engine is None:
            raise NotReady("the model is still loading; poll /readyz", kind="not_ready")
        return self.engine

    def begin_drain(self) -> None:
        """Refuse new scoring requests (503 draining) and run what is queued without waiting for fuller batches."""
        self.draining = True
        if self.engine is not None:
            self.engine.scheduler.flush()

    @contextmanager
    def admit(self) -> Iterator[Engine]:
        """Admit one scoring request (or refuse it with :class:`NotReady`); the drain waits for admitted ones."""
        engine = self.require_engine()
        with self._counted():
            yield engine

    @contextmanager
    def admit_write(self) -> Iterator[None]:
        """Admit one feedback request: it needs no model, so it is refused only while draining."""
        if self.draining:
            raise NotReady("the server is shutting down; retry (another replica will answer)", kind="draining")
        with self._counted():
            yield

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def start(self) -> None:
        """Load and warm up the backend on a thread, then start the scheduler."""
        s = self.settings
        try:
            backend = await asyncio.to_thread(self._load, self.root, self.card, s)
            if s.warmup:
                await asyncio.to_thread(self._warm_up, backend)
        except Exception as exc:  # whatever the cause, the pod must report unhealthy and say why
            self.load_error = f"the model failed to load: {exc}"
            log.exception("loading %s failed", self.root)
            if self._on_fatal:
                self._on_fatal(self.load_error)
            return
        limits = BatchLimits(s.max_batch_tokens, s.max_batch_items, s.max_queue_items, s.max_wait_ms / 1000,
                             s.sort_window_items, s.max_batch_padding, s.batch_stall_s)
        scheduler = Scheduler(backend, self.formatter.spec, limits, self.metrics, width_of(self.card.criteria))
        scheduler.start()
        self.metrics.track_queue_depth(lambda: scheduler.queue_depth)
        self.metrics.model_info.labels(self.model_name, backend.info.name, backend.info.device,
                                       backend.info.dtype).set(1)
        self.backend = backend
        self.engine = Engine(self.formatter, scheduler, RequestLimits(s.max_items_per_request, s.max_request_tokens,
                                                                      s.request_timeout_s),
                             self.card.normalization, s.tokenizer_threads, self.metrics, self.card.criteria)
        log.info("serving %s: %s on %s (%s, %s)", self.model_name, backend.info.name, backend.info.device,
                 backend.info.dtype, backend.info.detail)

    def _warm_up(self, backend: Backend) -> None:
        """Run the shapes the first requests will bring: one short item, then a full batch of long ones."""
        s, spec = self.settings, self.formatter.spec
        long_item = self.formatter.encode_text("warm up " * spec.max_length)
        rows = max(1, min(s.max_batch_items, s.max_batch_tokens // len(long_item.input_ids)))
        for batch in ([self.formatter.encode_text("warm up")], [long_item] * rows):
            backend.score(pad_batch(batch, spec))

    async def stop(self) -> None:
        """Drain: refuse new work, finish what is queued, release the model."""
        self.draining = True
        if self.engine is not None:
            await self.engine.scheduler.close()
            self.engine.close()
        if self.backend is not None:
            self.backend.close()
