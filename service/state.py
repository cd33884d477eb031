"""The app's lifecycle: load the models off the event loop, warm them up, serve, shadow, drain.

``/healthz`` is up as soon as the process listens; ``/readyz`` says ready only after every model is
loaded and has run warm-up batches (first batches allocate memory arenas and, on GPUs, pick kernels),
and goes back to 503 the moment draining starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardmodel.personal import BasisHeads, Profile, RowsOf
from service.backends import Backend, load_backend
from service.collect import LiveSampler
from service.deployment import BackendLoader, Ensemble, Version, versions_of
from service.engine import Engine, Personal, ScoreCall, Scored, ScoreInput, WholeText
from service.errors import NotReady, ServiceError
from service.inflight import InFlight
from service.metrics import Metrics
from service.models_file import Entry, SplitEntry, read_models_file
from service.monitors import Monitors, Observed
from service.registry import Registry, Resolved
from service.settings import ServiceSettings

__all__ = ["BackendLoader", "ServiceState"]

log = logging.getLogger(__name__)

ProfileLookup = Callable[[str, str], Awaitable[Profile | None]]
"""(user, basis heads' id) → the user's profile on those heads, or None."""


class ServiceState:
    """The registry of served models and the readiness flags; one per app."""

    def __init__(self, settings: ServiceSettings, entries: Sequence[Entry], metrics: Metrics,
                 on_fatal: Callable[[str], None] | None = None, load: BackendLoader = load_backend,
                 profiles: ProfileLookup | None = None) -> None:
        """``profiles``: looks up a user's profile on a set of basis heads (the feedback store's; None: every
        user gets the population's reward)."""
        self.settings = settings
        self._profiles = profiles
        self.metrics = metrics
        self.monitors = (Monitors(metrics.registry, settings.monitor_window_items, settings.monitor_max_runs)
                         if settings.monitors else None)
        self.registry = Registry(entries, settings, metrics, load,
                                 self.monitors.forget if self.monitors else lambda name, version: None)
        self._draining = False
        self.started = False
        self.load_error: str | None = None
        self.in_flight = InFlight()
        """Scoring and feedback requests admitted and not yet answered: the drain waits for them."""
        self._on_fatal = on_fatal
        self._shadows: set[asyncio.Task[None]] = set()
        self.sampler: LiveSampler | None = None
        """Set by the composer when live traffic is collected for labeling."""
        metrics.track_readiness(lambda: self.started and not self.draining and self.health() is None)
        metrics.track_queue_depth(lambda: self.registry.queue_depth)

    @property
    def default(self) -> Version:
        """The version answering requests that name no model (the first entry; an ensemble's first member)."""
        entry = self.registry.entries[self.registry.default]
        name = next(iter(entry.split)) if isinstance(entry, SplitEntry) else entry.name
        return versions_of(self.registry.targets[name])[0]

    @property
    def engine(self) -> Engine | None:
        """The default version's engine (``None`` until loaded)."""
        return self.default.engine if self.started else None

    @property
    def backend(self) -> Backend | None:
        """The default version's backend."""
        return self.default.backend

    def health(self) -> str | None:
        """Why this process can no longer serve (``/healthz`` answers 503: restart it), or ``None``."""
        if self.load_error:
            return self.load_error
        return self.registry.health() if self.started else None

    def ensure_alive(self) -> None:
        """Raise :class:`NotReady` (``load_failed`` or ``unhealthy``) if this process can no longer serve."""
        if self.load_error:
            raise NotReady(self.load_error, kind="load_failed")
        if self.started and (reason := self.registry.health()) is not None:
            raise NotReady.unhealthy(reason)

    def require_ready(self) -> None:
        """Raise :class:`NotReady` while draining, after a failed load, unhealthy, or while loading."""
        if self.draining:
            raise NotReady("the server is shutting down; retry (another replica will answer)", kind="draining")
        self.ensure_alive()
        if not self.started:
            raise NotReady("the model is still loading; poll /readyz", kind="not_ready")

    @property
    def draining(self) -> bool:
        """Shutting down: new requests get 503 ``draining``, ``/readyz`` says not ready. Set by :meth:`begin_drain`
        only, and never unset."""
        return self._draining

    def begin_drain(self) -> None:
        """Refuse new scoring and feedback requests (503 draining) from now on. Only sets a flag, so a signal handler
        may call it; :meth:`flush` then stops the batches waiting to fill up."""
        self._draining = True

    def flush(self) -> None:
        """Run what is queued without waiting for fuller batches (the drain has begun)."""
        if self.started:
            self.registry.flush()

    @contextmanager
    def admit(self, model: str | None, headers: Mapping[str, str]) -> Iterator[Resolved]:
        """Admit one scoring request to the target its ``model`` names (or refuse it with :class:`NotReady`,
        404 for an unknown name); both the drain and a swap's release wait for it."""
        self.require_ready()
        resolved = self.registry.resolve(model, headers)
        with self._counted(), resolved.target.admit():
            yield resolved

    @contextmanager
    def admit_write(self) -> Iterator[None]:
        """Admit one feedback request: it needs no model, so it is refused only while draining."""
        if self.draining:
            raise NotReady("the server is shutting down; retry (another replica will answer)", kind="draining")
        with self._counted():
            yield

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self.in_flight.hold():
            yield

    def monitor(self, resolved: Resolved, run: str, inputs: Sequence[ScoreInput], scored: Scored) -> None:
        """Feed the reward-hacking monitors one request's items (raw rewards; see :mod:`service.monitors`)."""
        if self.monitors is None or scored.lengths is None or scored.truncated_flags is None:
            return
        target = resolved.target
        reference = target.card.normalization if isinstance(target, Version) else None
        texts = [x.text[x.prompt_chars:] if isinstance(x, WholeText) else x[1] for x in inputs]
        self.monitors.observe(target.name, target.version, run, reference,
                              Observed(scored.raw_scores, scored.lengths, scored.truncated_flags, texts,
                                       scored.disagreement))

    def collect(self, inputs: Sequence[ScoreInput], scored: Scored) -> None:
        """Offer each prompt with several scored completions to the labeling sampler (when collecting)."""
        if self.sampler is None:
            return
        groups: dict[str, tuple[Any, list[str], list[float], list[float]]] = {}
        for i, x in enumerate(inputs):
            pair = x.split() if isinstance(x, WholeText) else x  # the split a client gave, if any
            if pair is None:
                continue
            prompt, completion = pair
            group = groups.setdefault(json.dumps(prompt, sort_keys=True), (prompt, [], [], []))
            group[1].append(completion)
            group[2].append(scored.raw_scores[i])
            if scored.disagreement is not None:
                group[3].append(scored.disagreement[i])
        for prompt, completions, scores, disagreement in groups.values():
            if len(completions) > 1:
                self.sampler.offer(prompt, completions, scores, disagreement or None)

    def shadow(self, resolved: Resolved, inputs: Sequence[ScoreInput], primary: Scored, rerank: bool) -> None:
        """Score the same inputs on the request's shadow in the background and record how they agree."""
        if resolved.shadow is None or self.draining:
            return
        task = asyncio.get_running_loop().create_task(
            compare_shadow(resolved, inputs, primary, rerank, self.metrics))
        self._shadows.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._shadows.discard)

    async def reload_file(self) -> None:
        """SIGHUP: re-read the models file and swap what changed; a bad file or a failed load keeps what serves."""
        if self.settings.models_file is None or not self.started or self.draining:
            log.warning("SIGHUP ignored: %s", "no --models-file to re-read" if self.settings.models_file is None
                        else "not serving")
            return
        try:
            entries = read_models_file(self.settings.models_file)
            for change in await self.registry.reload(entries):
                log.info("models file reloaded: %s", change)
        except ServiceError as exc:
            log.error("models file reload failed; what was serving still serves: %s", exc.message)

    async def start(self) -> None:
        """Load and warm up every model (on threads); a failure makes the process unhealthy and says why."""
        try:
            await self.registry.start()
        except Exception as exc:  # whatever the cause, the pod must report unhealthy and say why
            self.load_error = f"the model failed to load: {exc}"
            log.exception("loading the models failed")
            if self._on_fatal:
                self._on_fatal(self.load_error)
            return
        self.started = True

    async def profile(self, target: Version | Ensemble, user: str) -> Personal:
        """The profile ``user``'s request to ``target`` stands on: their fitted weights, or the population's while
        they have fewer judgements than the heads' ``min_judgements`` (or no store keeps profiles)."""
        basis = target.basis if isinstance(target, Version) else None
        if basis is None or self._profiles is None:
            return Personal(user)  # the engine (or the ensemble) answers 400 when there are no heads
        found = await self._profiles(user, basis.id)
        if found is None or found.judgements < basis.min_judgements:
            return Personal(user, None, found.judgements if found else 0)
        return Personal(user, found.weights, found.judgements)

    def personal_targets(self) -> list[tuple[BasisHeads, RowsOf]]:
        """The serving versions with basis heads, and how to read rows with each (profiles are refitted on
        them after new judgements)."""
        if not self.started:
            return []
        out = []
        for target in list(self.registry.targets.values()):
            for version in versions_of(target):
                if version.basis is not None and version.engine is not None and version.backend is not None \
                        and version.backend.rows_error is None:
                    out.append((version.basis, _rows_of(version)))
        return out

    async def stop(self) -> None:
        """Drain: refuse new work, finish what is queued (shadows included), release the models."""
        self.begin_drain()
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)
        await self.registry.close()


async def compare_shadow(resolved: Resolved, inputs: Sequence[ScoreInput], primary: Scored, rerank: bool,
                         metrics: Metrics) -> None:
    """Score ``inputs`` on the shadow and record its agreement with the primary's answer."""
    shadow = resolved.shadow
    assert shadow is not None
    labels = (resolved.entry, shadow.name)
    try:
        with shadow.admit():
            theirs = await shadow.score(ScoreCall(inputs, primary.normalized))
    except Exception as exc:  # a shadow never harms the primary's answer; count it and move on
        metrics.shadow_failed.labels(*labels).inc()
        log.debug("shadow %s failed: %s", shadow.name, exc)
        return
    if len(inputs) > 1:
        metrics.shadow_rank.labels(*labels).observe((1 + kendall_tau(primary.scores, theirs.scores)) / 2)
    if rerank:
        same = int(np.argmax(primary.scores)) == int(np.argmax(theirs.scores))
        metrics.shadow_top.labels(*labels, "match" if same else "differ").inc()


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a between two score lists (pairs tied in either count as neither)."""
    x, y = np.asarray(a), np.asarray(b)
    i, j = np.triu_indices(len(x), 1)
    concordance = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return float(concordance.mean()) if len(i) else 1.0


def _rows_of(version: Version) -> RowsOf:
    """Read rows with ``version``, admitted like a request (a swap waits for it)."""

    async def rows(items: Sequence[tuple[Any, str]]) -> npt.NDArray[np.float64]:
        with version.admit():
            assert version.engine is not None
            return await version.engine.read_rows(items)

    return rows
