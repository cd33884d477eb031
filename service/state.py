"""The app's lifecycle: load the models off the event loop, warm them up, serve, drain.

``/healthz`` is up as soon as the process listens; ``/readyz`` says ready only after every model is
loaded and has run warm-up batches (first batches allocate memory arenas and, on GPUs, pick kernels),
and goes back to 503 the moment draining starts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from rewardmodel.personal import BasisHeads, Profile, RowsOf
from service.backends import Backend, load_backend
from service.deployment import BackendLoader, Ensemble, Version, versions_of
from service.engine import Engine, Personal
from service.errors import NotReady, ServiceError
from service.hooks import Answered, Hook
from service.inflight import InFlight
from service.metrics import Metrics
from service.models_file import Entry, SplitEntry, read_models_file
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
                 profiles: ProfileLookup | None = None, hooks: Sequence[Hook] = (),
                 released: Callable[[str, str], None] = lambda name, version: None) -> None:
        """``profiles``: looks up a user's profile on a set of basis heads (the feedback store's; None: every
        user gets the population's reward). ``hooks`` are told of every answer (:meth:`after`); ``released`` of
        every version the registry lets go (name, version), so the monitors drop its series."""
        self.settings = settings
        self._profiles = profiles
        self.metrics = metrics
        self._hooks = tuple(hooks)
        self.registry = Registry(entries, settings, metrics, load, released)
        self._draining = False
        self.started = False
        self.load_error: str | None = None
        self.in_flight = InFlight()
        """Scoring and feedback requests admitted and not yet answered: the drain waits for them."""
        self._on_fatal = on_fatal
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

    def after(self, answered: Answered) -> None:
        """Hand one answered scoring request to the hooks the app registered (monitors, sampler, shadow)."""
        for hook in self._hooks:
            try:
                hook.after(answered)
            except Exception:  # a hook never harms the answer it is told of
                log.exception("a post-scoring hook failed: %s", type(hook).__name__)

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
        for hook in self._hooks:
            await hook.close()
        await self.registry.close()


def _rows_of(version: Version) -> RowsOf:
    """Read rows with ``version``, admitted like a request (a swap waits for it)."""

    async def rows(items: Sequence[tuple[Any, str]]) -> npt.NDArray[np.float64]:
        with version.admit():
            assert version.engine is not None
            return await version.engine.read_rows(items)

    return rows
