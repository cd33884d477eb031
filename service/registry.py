"""The one owner of what is served: name → version or ensemble, splits, shadows, and hot swaps.

Entries (:mod:`service.models_file`) become targets. A request resolves its name to a target once and
keeps it (see :mod:`service.deployment`). A swap loads the new target beside the old one, warms it up,
switches the name in one assignment on the event loop (atomic for every request after it), then
releases the old target once its admitted requests are answered. A load that fails, or a card that
fails its check, leaves the old target serving and says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rewardmodel import BundleCard, RewardModelError, read_card
from service.autoselect import Choice, choose, log_table
from service.deployment import BackendLoader, Ensemble, Version, serving_formatter, versions_of
from service.engines import AUTO, BACKENDS
from service.errors import InsufficientMemory, ModelsError, NotFound, ServiceError, SwapFailed
from service.machine import available_memory, cpu_count
from service.metrics import Metrics
from service.models_file import BundleEntry, EnsembleEntry, Entry, SplitEntry, check
from service.settings import ServiceSettings
from service.sources import bundle_path, verified_files

log = logging.getLogger(__name__)

MEMORY_OVERHEAD = 1.5
"""A loaded model takes about this many times its weight files (runtime arenas, tokenizer, warm-up)."""


@dataclass(frozen=True)
class Resolved:
    """What one request is answered by, and what shadows it."""

    target: Version | Ensemble
    shadow: Version | Ensemble | None
    entry: str
    """The name the request asked for (a split's name, not its target's)."""


class Registry:
    """Named targets; the event loop is the only writer (swaps are serialized by a lock)."""

    def __init__(self, entries: Sequence[Entry], settings: ServiceSettings, metrics: Metrics,
                 load: BackendLoader, released: Callable[[str, str], None] = lambda name, version: None) -> None:
        self.settings = settings
        self._released = released
        """Told (name, version) of each target released, so its monitors go with it."""
        self._metrics = metrics
        self._load = load
        self._lock = asyncio.Lock()
        self.entries: dict[str, Entry] = {e.name: e for e in entries}
        self.default = entries[0].name
        self._threads = thread_budget(entries, settings)
        self.targets: dict[str, Version | Ensemble] = {}
        for e in entries:  # exported at 0 from the start, so the swap alert reads 0 rather than no data
            if isinstance(e, BundleEntry):
                for result in ("ok", "failed"):
                    metrics.swaps.labels(e.name, result)
        for e in entries:  # cards and tokenizers now, so a bad bundle fails before the server listens
            if not isinstance(e, SplitEntry):
                self.targets[e.name] = self._build(e)

    # -- building ---------------------------------------------------------------------------------------------

    def _settings_for(self, entry: BundleEntry | EnsembleEntry) -> ServiceSettings:
        values = {**self.settings.model_dump(), "threads": self._threads, **entry.overrides()}
        try:
            return ServiceSettings.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors())
            raise ModelsError(f"model {entry.name!r}: {problems}") from None

    def _engine(self, entry: BundleEntry | EnsembleEntry, root: Path, card: BundleCard,
                settings: ServiceSettings) -> Choice | None:
        """The engine ``auto`` stands for (measured, or remembered); None when the settings name both."""
        if AUTO not in (settings.backend, settings.variant):
            return None
        streams_chosen = "streams" in self.settings.model_fields_set or "streams" in entry.overrides()
        choice = choose(root, card, settings, serving_formatter(root, card, settings), self._load,
                        self.settings.home / "engines", streams_chosen)
        log_table(entry.name, choice)
        return choice

    def _bundles(self, entry: BundleEntry | EnsembleEntry) -> list[Path]:
        """The entry's bundles, importing a plain directory or hub name first (blocking: call off the loop)."""
        paths = [entry.path] if isinstance(entry, BundleEntry) else list(entry.members)
        return [bundle_path(Path(p), self.settings) for p in paths]

    def _build(self, entry: BundleEntry | EnsembleEntry, bundles: Sequence[Path] | None = None) -> Version | Ensemble:
        roots = list(bundles) if bundles is not None else self._bundles(entry)
        cards = [read_card(r, verified=verified_files(self.settings)) for r in roots]
        s = self._settings_for(entry)
        engine = self._engine(entry, roots[0], cards[0], s)  # an ensemble's members serve alike
        if engine is not None:
            s = engine.settings(s)
        if isinstance(entry, BundleEntry):
            name = self.settings.model_name if len(self.entries) == 1 and self.settings.model_name else entry.name
            return Version(name, roots[0], s, self._metrics, cards[0], engine)
        names = member_names([Path(p) for p in entry.members])
        members = [Version(f"{entry.name}/{n}", r, s, self._metrics, c, engine)
                   for n, r, c in zip(names, roots, cards, strict=True)]
        return Ensemble(entry.name, members, names, entry.aggregate, entry.uwo_lambda, self._metrics)

    async def _start(self, target: Version | Ensemble) -> None:
        versions = versions_of(target)
        try:
            for v in versions:
                await v.start(self._load)
        except BaseException:
            for v in versions:
                await v.release(0)
            raise

    async def start(self) -> None:
        """Load every target (raises the first failure; the caller reports it)."""
        for target in self.targets.values():
            await self._start(target)

    # -- serving ----------------------------------------------------------------------------------------------

    def _entry(self, name: str) -> Entry:
        """The entry called ``name``, or 404 ``model_not_found`` naming the served ones."""
        entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"no model named {name!r}; this server serves {sorted(self.entries)} (GET /v1/models)",
                           kind="model_not_found")
        return entry

    def resolve(self, name: str | None, headers: Mapping[str, str]) -> Resolved:
        """The target for a request naming ``name`` (None: the default); 404 for an unknown name."""
        asked = name or self.default
        entry = self._entry(asked)
        chosen = asked
        if isinstance(entry, SplitEntry):
            chosen = pick(entry.split, headers.get(entry.sticky_header))
        target = self.targets[chosen]
        if isinstance(entry, SplitEntry):
            self._metrics.split.labels(asked, chosen, target.version).inc()
        # during a reload, a shadow named by a new entry starts once that entry has loaded
        shadow = self.targets.get(entry.shadow) if entry.shadow else None
        return Resolved(target, shadow, asked)

    def describe(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        """(name, version, what it is) of every target a request may name, the default first: a version's card
        and engine, an ensemble's members, a split's targets; with its shadow and whether it is the default."""
        out = []
        for name, entry in self.entries.items():
            target = self.targets.get(name)
            about: dict[str, Any]
            if target is not None:
                about = target.describe()
            else:
                assert isinstance(entry, SplitEntry)
                about = {"split": {"weights": entry.split, "sticky_header": entry.sticky_header,
                                   "versions": {t: self.targets[t].version for t in entry.split}}}
            about |= {"shadow": entry.shadow, "default": name == self.default}
            out.append((name, None if target is None else target.version, about))
        return out

    def versions(self) -> list[Version]:
        """Every loaded version (ensemble members included)."""
        return [v for t in self.targets.values() for v in versions_of(t)]

    def health(self) -> str | None:
        """Why some version cannot serve (the process must restart), or ``None``."""
        for v in self.versions():
            if (reason := v.health()) is not None:
                return f"{v.label}: {reason}"
        return None

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch, every version summed."""
        return sum(v.queue_depth for v in self.versions())

    def flush(self) -> None:
        """Draining: no version waits for fuller batches."""
        for v in self.versions():
            v.flush()

    async def close(self) -> None:
        """Release every version (the drain)."""
        for v in self.versions():
            await v.release(self.settings.request_timeout_s)

    # -- swapping ---------------------------------------------------------------------------------------------

    async def swap(self, name: str, path: Path) -> dict[str, Any]:
        """Serve bundle ``path`` under ``name`` (a bundle entry), replacing its version without dropping a request."""
        entry = self._entry(name)
        if not isinstance(entry, BundleEntry):
            raise SwapFailed(f"{name!r} is {'a split' if isinstance(entry, SplitEntry) else 'an ensemble'}; PUT "
                             "swaps a bundle entry (edit the models file and send SIGHUP for the others)")
        return await self.apply_entry(entry.model_copy(update={"path": path}))

    async def apply_entry(self, entry: Entry) -> dict[str, Any]:
        """Make ``entry`` what its name serves: load, switch, release the old (raises :class:`SwapFailed`).
        The caller has checked the entries as a whole (names it refers to exist or load before it)."""
        async with self._lock:
            if isinstance(entry, SplitEntry):
                self.entries[entry.name] = entry
                return {"model": entry.name, "split": entry.split}
            old = self.targets.get(entry.name)
            try:
                bundles = await asyncio.to_thread(self._bundles, entry)
                self._check_memory(entry, bundles)
                new = await asyncio.to_thread(self._build, entry, bundles)
                await self._start(new)
            except InsufficientMemory:
                self._metrics.swaps.labels(entry.name, "failed").inc()
                raise
            except (ServiceError, RewardModelError, OSError) as exc:
                self._metrics.swaps.labels(entry.name, "failed").inc()
                log.warning("swap of %s failed; the old version keeps serving: %s", entry.name, exc)
                raise SwapFailed(f"{entry.name!r} was not swapped, the old version keeps serving: {exc}") from None
            except Exception as exc:  # a backend's own failure: the old version must keep serving all the same
                self._metrics.swaps.labels(entry.name, "failed").inc()
                log.exception("swap of %s failed", entry.name)
                raise SwapFailed(f"{entry.name!r} was not swapped, the old version keeps serving: "
                                 f"{type(exc).__name__}: {exc}") from None
            self.targets[entry.name] = new  # the switch: one assignment, every later request sees the new one
            self.entries[entry.name] = entry
            self._metrics.swaps.labels(entry.name, "ok").inc()
        serving_on = {new.version, *(v.version for v in versions_of(new))}
        answered = 0 if old is None else await self._release(old, keep=serving_on)
        log.info("%s now serves version %s", entry.name, new.version)
        return {"model": entry.name, "version": new.version,
                "previous": None if old is None else {"version": old.version, "answered_after_switch": answered,
                                                      "released": True}}

    async def reload(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Apply an edited models file: swap changed entries, add new ones, release removed ones."""
        check(list(entries))
        if entries[0].name != self.default:
            raise ModelsError(f"the first model (the default) must stay {self.default!r}")
        out = []
        wanted = {e.name: e for e in entries}
        # what loads models first, so that the splits switched next find their targets
        for e in sorted(entries, key=lambda e: isinstance(e, SplitEntry)):
            if self.entries.get(e.name) != e:
                out.append(await self.apply_entry(e))
        for name in [n for n in self.entries if n not in wanted]:
            async with self._lock:
                self.entries.pop(name)
                gone = self.targets.pop(name, None)
            if gone is not None:
                await self._release(gone)
            out.append({"model": name, "removed": True})
        return out

    async def _release(self, target: Version | Ensemble, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Release a replaced or removed target once its admitted requests are answered; returns how many were.
        ``keep``: versions that serve on (a reload of the same files), whose series and monitors stay."""
        answered = 0
        for v in versions_of(target):
            answered += await v.release(self.settings.request_timeout_s + 5, forget=v.version not in keep)
        if target.version not in keep:
            self._released(target.name, target.version)
        return answered

    def _check_memory(self, entry: BundleEntry | EnsembleEntry, bundles: Sequence[Path]) -> None:
        # the card's file list only: its hashes are checked once, when the version is built (off the event loop)
        cards = [read_card(p, verify=False) for p in bundles]
        s = self._settings_for(entry)
        need = int(MEMORY_OVERHEAD * sum(weights_bytes(p, c, s) for p, c in zip(bundles, cards, strict=True)))
        have = self.settings.swap_memory_bytes or available_memory()
        if have and need > have:
            raise InsufficientMemory(f"{entry.name!r}: loading it needs about {need / 2**20:.0f} MiB beside the "
                                     f"serving version, and {have / 2**20:.0f} MiB are available; the old version "
                                     "keeps serving. Free memory, or restart the pod with the new bundle")


def member_names(paths: Sequence[Path]) -> list[str]:
    """Ensemble members' names: their directories' names, numbered where two are the same."""
    seen: Counter[str] = Counter()
    out = []
    for p in paths:
        seen[p.name] += 1
        out.append(p.name if seen[p.name] == 1 else f"{p.name}#{seen[p.name]}")
    return out


def pick(split: Mapping[str, float], sticky: str | None) -> str:
    """A split's target: by weight, the same for the same sticky value (uniform hash), random without one."""
    u = (int.from_bytes(hashlib.sha256(sticky.encode()).digest()[:8], "big") / 2**64 if sticky is not None
         else random.random())
    total = sum(split.values())
    edge = 0.0
    for name, weight in split.items():
        edge += weight / total
        if u < edge:
            return name
    return next(n for n, w in list(split.items())[::-1] if w > 0)


def thread_budget(entries: Sequence[Entry], settings: ServiceSettings) -> int:
    """Intra-op threads per model when the settings leave it to us: the cores split between the models
    that run on the CPU, so that two models do not each take every core (0: one model, the library decides)."""
    if settings.threads:
        return settings.threads
    models = sum(len(e.members) if isinstance(e, EnsembleEntry) else 1 for e in entries
                 if not isinstance(e, SplitEntry) and (e.device or settings.device) == "cpu")
    if models <= 1:
        return 0
    return max(1, cpu_count() // models)


def weights_bytes(root: Path, card: BundleCard, settings: ServiceSettings) -> int:
    """Bytes of the weight files the settings' backend loads (the largest of the candidates under ``auto``)."""
    engines = [BACKENDS[settings.backend]] if settings.backend != AUTO else list(BACKENDS.values())
    sizes = [sum(p.stat().st_size for p in e.weight_files(root, card, v) if p.is_file())
             for e in engines for v in e.variants if settings.variant in (AUTO, v) and e.available(card, v) is None]
    return max(sizes, default=0)
