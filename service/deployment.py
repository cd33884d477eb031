"""What answers a request: one loaded bundle version (:class:`Version`) or an :class:`Ensemble` of them.

A version owns its backend, scheduler and engine, and counts the requests admitted to it. When a swap
replaces it, it is :meth:`~Version.release` d: it waits until every admitted request has its answer,
lets the scheduler finish what is queued, then frees the model. Requests hold the version they were
admitted to, never the name, so a swap never moves a request between versions halfway.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rewardmodel import BundleCard, Formatter, load_tokenizer, pad_batch, read_card
from rewardmodel.card import content_id
from rewardmodel.personal import bundle_basis
from service.admission import Work
from service.autoselect import Choice
from service.backends import Backend
from service.batching import BatchLimits
from service.engine import Engine, RequestLimits, ScoreCall, Scored, Timings
from service.errors import InvalidRequest, NotReady, ServiceError
from service.inflight import InFlight
from service.metrics import Metrics
from service.scheduler import Scheduler
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

BackendLoader = Callable[[Path, BundleCard, ServiceSettings], Backend]
"""Builds the backend for a bundle (:func:`~service.backends.load_backend`, or a test's wrapper of it)."""

Aggregate = Literal["mean", "min", "uwo"]


def version_id(card: BundleCard, backend: str, variant: str) -> str:
    """A content id: the card's file hashes and what is run of them (fp32 and int8 of one bundle differ)."""
    return content_id(card, f"{backend}:{variant}")


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


class Version:
    """One bundle loaded under one name: backend, scheduler and engine (after :meth:`start`)."""

    def __init__(self, name: str, root: Path, settings: ServiceSettings, metrics: Metrics,
                 card: BundleCard | None = None, engine: Choice | None = None) -> None:
        self.name = name
        self.root = root
        self.settings = settings
        self.engine_choice = engine
        """How ``auto`` chose the backend and variant (None: the settings named them)."""
        self.card = card or read_card(root)
        self.formatter = serving_formatter(root, self.card, settings)
        self.version = version_id(self.card, settings.backend, settings.variant)
        self.basis = bundle_basis(root, self.card.personalization) if self.card.personalization else None
        """The bundle's basis heads for personal rewards (None: it has none)."""
        self.backend: Backend | None = None
        self.engine: Engine | None = None
        self.in_flight = InFlight()
        """Requests admitted to this version and not yet answered: its release waits for them."""
        self.released = False
        self._metrics = metrics.for_model(name, self.version)

    @property
    def label(self) -> str:
        """``name@version``, for logs and answers."""
        return f"{self.name}@{self.version}"

    async def start(self, load: BackendLoader) -> None:
        """Load and warm up the backend on a thread, then start the scheduler (raises what loading raised)."""
        s = self.settings
        backend = await asyncio.to_thread(load, self.root, self.card, s)
        warm_up = None
        try:
            if s.warmup:
                warm_up = await asyncio.to_thread(self._warm_up, backend)
        except BaseException:
            backend.close()
            raise
        limits = BatchLimits(s.max_batch_tokens, s.max_batch_items, s.max_queue_items, s.max_wait_ms / 1000,
                             s.sort_window_items, s.max_batch_padding, s.batch_stall_s)
        scheduler = Scheduler(backend, self.formatter.spec, limits, self._metrics, self.card.layout.width,
                              warm_up)
        scheduler.start()
        self.backend = backend
        self.engine = Engine(self.formatter, scheduler, RequestLimits(s.max_items_per_request, s.max_request_tokens,
                                                                      s.request_timeout_s),
                             self.card.normalization, s.tokenizer_threads, self._metrics, self.card.layout,
                             self.basis)
        self._metrics.loaded(backend.info.name, backend.info.device, backend.info.dtype)
        choice = self.engine_choice
        self._metrics.engine(s.backend, s.variant, s.streams, choice.how if choice else "flags")
        log.info("serving %s from %s: %s on %s (%s, %s)", self.label, self.root, backend.info.name,
                 backend.info.device, backend.info.dtype, backend.info.detail)

    def _warm_up(self, backend: Backend) -> tuple[Work, float]:
        """Run the shapes the first requests will bring: one short item, then a full batch of long ones, on every
        stream at once (concurrent calls each get a stream of their own); the full batch runs twice, and the
        second run (its work and seconds) is what admission starts from (:mod:`service.admission`)."""
        s, spec = self.settings, self.formatter.spec
        # (prompt, completion) items: they carry what every head reads (a gate's header, step tags all along)
        short, long_item = self.formatter.encode_many([("warm up", "warm up"),
                                                       ("warm up " * spec.max_length, "warm up\n\n" * spec.max_length)])
        rows = max(1, min(s.max_batch_items, s.max_batch_tokens // len(long_item.input_ids)))
        seconds = 0.0
        with ThreadPoolExecutor(backend.streams) as pool:
            for batch in ([short], [long_item] * rows, [long_item] * rows):
                padded = pad_batch(batch, spec, backend.pad_multiple)
                started = time.perf_counter()
                list(pool.map(backend.score, [padded] * backend.streams))
                seconds = time.perf_counter() - started
        return Work(rows, rows * len(long_item.input_ids)), seconds

    def describe(self) -> dict[str, Any]:
        """What ``/v1/models`` says of this version: its card, engine, runtime and personal rewards."""
        card, s, info = self.card, self.settings, self.backend.info if self.backend else None
        report = card.training.get("result", {}).get("report", {})
        basis = self.basis
        return {
            "version": self.version, "path": str(self.root), "card_name": card.name,
            "base_model": card.base_model, "architecture": card.architecture, "model_type": card.model_type,
            "family": card.source.get("family", "rewardserve"), "head": card.head.kind,
            "backend": s.backend, "variant": s.variant, "device": s.device, "threads": s.threads,
            "streams": s.streams,
            "engine": {"chosen": "flags"} if self.engine_choice is None else {"chosen": self.engine_choice.how,
                                                                              "table": self.engine_choice.table},
            "runtime": None if info is None else {"dtype": info.dtype, "detail": info.detail},
            "max_length": self.formatter.spec.max_length, "template": card.formatting.template,
            "normalization": None if card.normalization is None else {
                "mean": card.normalization.mean, "std": card.normalization.std},
            "heldout_accuracy": report.get("accuracy"), "onnx_variants": sorted(card.onnx),
            "criteria": None if card.criteria is None else card.criteria.to_dict(),
            "personalization": None if basis is None else {
                "k": basis.k, "basis": basis.id, "min_judgements": basis.min_judgements,
                "why_not": None if self.backend is None else self.backend.rows_error},
        }

    def health(self) -> str | None:
        """Why this version cannot serve, or ``None``."""
        return None if self.engine is None else self.engine.scheduler.health()

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        return 0 if self.engine is None else self.engine.scheduler.queue_depth

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Count one request until it is answered; a released version admits none."""
        if self.released or self.engine is None:
            raise NotReady(f"{self.label} is not serving (it was swapped out); retry", kind="not_ready")
        with self.in_flight.hold():
            yield

    async def score(self, call: ScoreCall) -> Scored:
        """Scores of the call's inputs by this version (``details`` is for ensembles: a lone model has none)."""
        assert self.engine is not None, "admit() before score()"
        scored = await self.engine.score(call)
        return replace(scored, model=self.name, version=self.version)

    def flush(self) -> None:
        """Stop waiting for fuller batches (the process is draining)."""
        if self.engine is not None:
            self.engine.scheduler.flush()

    async def release(self, timeout_s: float, forget: bool = True) -> int:
        """Wait for the requests admitted to this version (up to ``timeout_s``), finish the queue, free the model.

        ``forget``: drop its metric series too (not when the same version was reloaded: they are the new
        one's). Returns how many requests were still being answered when the release began."""
        self.released = True  # admits nothing new
        waiting = self.in_flight.count
        await self.in_flight.idle(timeout_s)
        if self.engine is not None:
            await self.engine.scheduler.close()
            self.engine.close()
        if self.backend is not None:
            await asyncio.to_thread(self.backend.close)
        if forget:
            self._metrics.forget()
        log.info("released %s after its last %d requests", self.label, waiting)
        return waiting


def aggregate(members: npt.NDArray[np.float64], how: Aggregate, uwo_lambda: float) -> npt.NDArray[np.float64]:
    """The ensemble reward of ``(members, items)`` standardized rewards: mean, min (worst case), or uwo
    (uncertainty-weighted: mean − λ·variance across members, Coste et al. 2023)."""
    if how == "mean":
        return members.mean(axis=0)
    if how == "min":
        return members.min(axis=0)
    return members.mean(axis=0) - uwo_lambda * members.var(axis=0)


class Ensemble:
    """Several versions scoring every item; the reward aggregates their rewards standardized by each card."""

    def __init__(self, name: str, members: Sequence[Version], member_names: Sequence[str], how: Aggregate,
                 uwo_lambda: float, metrics: Metrics) -> None:
        missing = [m.root for m in members if m.card.normalization is None]
        if missing:
            raise ServiceError(f"ensemble {name!r}: members {missing} record no normalization in their card; "
                               "ensemble members are standardized by it before aggregating (retrain them)")
        self.name = name
        self.members = list(members)
        self.how = how
        self.uwo_lambda = uwo_lambda
        parts = "|".join([how, f"{uwo_lambda:g}", *(m.version for m in members)])
        self.version = hashlib.sha256(parts.encode()).hexdigest()[:12]
        self.member_names = list(member_names)
        self._disagreement = metrics.ensemble_std.labels(name)

    def describe(self) -> dict[str, Any]:
        """What ``/v1/models`` says of this ensemble: its aggregate and each member."""
        return {"ensemble": {"aggregate": self.how, "uwo_lambda": self.uwo_lambda,
                             "members": {n: m.describe() for n, m in zip(self.member_names, self.members,
                                                                         strict=True)}}}

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Admit the request to every member (each member's release waits for it)."""
        with ExitStack() as stack:
            for member in self.members:
                stack.enter_context(member.admit())
            yield

    async def score(self, call: ScoreCall) -> Scored:
        """Every member scores (their schedulers run side by side); the aggregate is the reward."""
        if call.criteria or call.weights is not None:
            raise InvalidRequest("an ensemble answers one aggregate reward; leave out 'criteria' and 'weights'",
                                 kind="no_criteria")
        if call.user is not None:
            raise InvalidRequest("an ensemble has no personal rewards; leave out 'user', or name one of its members "
                                 "that has basis heads", kind="no_personalization")
        inputs, details = call.inputs, call.details
        member_call = ScoreCall(inputs, True, call.field)
        results = await asyncio.gather(*(m.score(member_call) for m in self.members))
        z = np.asarray([r.scores for r in results], dtype=np.float64)
        reward = aggregate(z, self.how, self.uwo_lambda)
        std = z.std(axis=0)
        for s in std:
            self._disagreement.observe(float(s))
        first = results[0]
        per_member = None
        if details:
            per_member = [{"members": {n: float(z[j, i]) for j, n in enumerate(self.member_names)},
                           "std": float(std[i])} for i in range(len(inputs))]
        scores = [float(r) for r in reward]
        return Scored(scores, True, first.input_tokens, first.truncated_items, scores,
                      Timings(max(r.timings.tokenize_s for r in results), max(r.timings.queue_s for r in results),
                              max(r.timings.inference_s for r in results)),
                      model=self.name, version=self.version, details=per_member, lengths=first.lengths,
                      truncated_flags=first.truncated_flags, disagreement=[float(s) for s in std])


def versions_of(target: Version | Ensemble) -> list[Version]:
    """The loaded versions behind a target: itself, or an ensemble's members."""
    return target.members if isinstance(target, Ensemble) else [target]
