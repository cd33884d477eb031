"""``--backend auto`` and ``--variant auto``: the fastest engine a bundle has on this machine, by measurement.

No fixed default is fastest on every CPU: OpenVINO's static int8 ran 1.4-1.7 x onnxruntime's dynamic int8 on an
AVX-512 VNNI machine, and 0.6 x on a 2-core AVX2-only EPYC (benchmarks/auto_engine.py). So at start the service times
every (backend, variant) the table (:mod:`service.engines`) offers that the bundle has, whose export passed the
parity gate and whose package is installed: each is loaded with the threads and streams it would serve with,
warmed up, and timed on batches shaped like the settings (``max_batch_items`` rows, or fewer under
``max_batch_tokens``, of ``TIMED_TOKENS`` tokens), for about ``TIME_BUDGET_S`` seconds (one round, when it is far
behind the fastest so far). The fastest serves; the
table is logged, shown in ``/v1/models`` and the ``rewardserve_engine_info`` metric, and remembered under
``$REWARDSERVE_HOME/engines/`` keyed by the bundle's content, the CPU model, the cores and threads, the batch
settings and the libraries' versions, so a restart does not time again. A flag that names a backend or variant
narrows the candidates; naming both leaves nothing to choose.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from rewardmodel import BundleCard, Formatter, RewardModelError, pad_batch
from service.backends.base import Backend
from service.engines import AUTO, BACKENDS
from service.errors import BackendFailure, ServiceError
from service.machine import cpu_count, cpu_model
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

TIMED_TOKENS = 128
"""Tokens per timed item (or the card's limit, when lower): about an HH pair's length."""
TIME_BUDGET_S = 1.0
"""Timed seconds per candidate, after its warm-up."""
MIN_CALLS = 2
"""Timed rounds (one batch per stream each) at least, whatever the budget."""
HOPELESS = 0.7
"""A candidate timed below this share of the best so far after its first round stops there: it cannot win, and
on 2 cores each round of a slow engine costs seconds of start-up."""
CACHE_VERSION = 1

How = Literal["measured", "remembered", "only", "flags"]


@dataclass(frozen=True)
class Candidate:
    """One engine to time: a backend, a variant and the streams it would serve with."""

    backend: str
    variant: str
    streams: int


@dataclass(frozen=True)
class Choice:
    """What serves, how it was chosen, and what was timed."""

    backend: str
    variant: str
    streams: int
    how: How
    table: list[dict[str, Any]] = field(default_factory=list)
    """Each candidate: backend, variant, streams, and items_per_s or why it was not timed."""

    def settings(self, settings: ServiceSettings) -> ServiceSettings:
        """``settings`` with the choice filled in."""
        return replace_settings(settings, Candidate(self.backend, self.variant, self.streams))


def candidates(card: BundleCard, settings: ServiceSettings, streams_chosen: bool = False
               ) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """(engines to time, the others with why not), under the backend/variant the settings fix; each with the
    settings' streams when they were chosen, else the streams its backend serves best with."""
    out, skipped = [], []
    for engine in BACKENDS.values():
        if settings.backend not in (AUTO, engine.name):
            continue
        for variant in engine.variants:
            if settings.variant not in (AUTO, variant):
                continue
            if not engine.exported and variant != "fp32" and settings.variant == AUTO and settings.device == "cpu":
                continue  # the checkpoint in half precision is slower than fp32 on a CPU: no need to time it
            if not engine.exported and variant == "fp32" and settings.variant == AUTO and settings.device == "cuda":
                continue  # and on a GPU fp32 is the slow one
            streams = settings.streams if streams_chosen else (
                engine.auto_streams if settings.device == "cpu" and cpu_count() >= 2 else 1)
            why = (engine.why_not(variant, settings.device, streams) or engine.available(card, variant)
                   or (None if engine.installed() else f"{engine.package} is not installed"))
            if why is None and settings.threads and settings.threads < streams:
                streams = 1
            row = {"backend": engine.name, "variant": variant, "streams": streams}
            if why is None:
                out.append(Candidate(engine.name, variant, streams))
            else:
                skipped.append({**row, "skipped": why})
    return out, skipped


def cache_key(card: BundleCard, settings: ServiceSettings, found: list[Candidate]) -> str:
    """What makes a measurement hold: the bundle's files, the machine, the settings that shape batches, the
    libraries."""
    versions = {}
    for package in sorted({e.package for e in BACKENDS.values()} | {"onnxruntime-gpu"}):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    key = {"v": CACHE_VERSION, "files": sorted(card.files.items()), "cpu": cpu_model(), "cores": cpu_count(),
           "threads": settings.threads, "device": settings.device, "items": settings.max_batch_items,
           "tokens": settings.max_batch_tokens, "item_tokens": settings.max_item_tokens,
           "candidates": [asdict(c) for c in found], "versions": versions}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def timed_batch(formatter: Formatter, settings: ServiceSettings, pad_multiple: int) -> Any:
    """A batch shaped like the settings: as many items of :data:`TIMED_TOKENS` tokens as the limits allow."""
    spec = formatter.spec
    length = min(TIMED_TOKENS, spec.max_length)
    short = Formatter(formatter.tokenizer, replace(spec, max_length=length))
    item = short.encode("warm up " * length, "warm up\n\n" * length)  # cut to ``length``; tags for a PRM
    rows = max(1, min(settings.max_batch_items, settings.max_batch_tokens // max(1, len(item.input_ids))))
    return pad_batch([item] * rows, spec, pad_multiple), rows


def items_per_s(backend: Backend, formatter: Formatter, settings: ServiceSettings, best: float = 0.0) -> float:
    """The backend's items/s on batches shaped like the settings, every stream busy (cut short when it falls
    below :data:`HOPELESS` of ``best``, the fastest candidate so far)."""
    batch, rows = timed_batch(formatter, settings, backend.pad_multiple)
    with ThreadPoolExecutor(backend.streams) as pool:
        list(pool.map(backend.score, [batch] * backend.streams))  # warm-up, every stream
        calls, started = 0, time.perf_counter()
        while calls < MIN_CALLS * backend.streams or time.perf_counter() - started < TIME_BUDGET_S:
            list(pool.map(backend.score, [batch] * backend.streams))
            calls += backend.streams
            if rows * calls / (time.perf_counter() - started) < HOPELESS * best:
                break
        elapsed = time.perf_counter() - started
    return rows * calls / elapsed


def choose(root: Path, card: BundleCard, settings: ServiceSettings, formatter: Formatter,
           load: Any, cache: Path | None, streams_chosen: bool = False) -> Choice:
    """The engine to serve with (see the module docstring); raises :class:`ServiceError` when none can."""
    found, skipped = candidates(card, settings, streams_chosen)
    if not found:
        reasons = "; ".join(f"{s['backend']} {s['variant']}: {s['skipped']}" for s in skipped) or "none match"
        raise ServiceError(f"no engine can serve {root} with backend={settings.backend} variant={settings.variant} "
                           f"on {settings.device} ({reasons}). Export the variants (rewardserve export), or install "
                           "a backend's package")
    if len(found) == 1:
        only = found[0]
        return Choice(only.backend, only.variant, only.streams, "only", [asdict(only), *skipped])
    key = cache_key(card, settings, found)
    record = (cache / f"{key}.json") if cache is not None else None
    if record is not None and record.is_file():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            return Choice(data["backend"], data["variant"], int(data["streams"]), "remembered", data["table"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring the unreadable engine record %s", record)
    table = []
    for c in found:
        try:
            backend = load(root, card, replace_settings(settings, c))
        except (ServiceError, RewardModelError) as exc:  # one engine failing to load is a row, not an outage
            table.append({**asdict(c), "skipped": f"failed to load: {exc}"})
            continue
        try:
            best = max((row["items_per_s"] for row in table if "items_per_s" in row), default=0.0)
            table.append({**asdict(c), "items_per_s": round(items_per_s(backend, formatter, settings, best), 2)})
        except BackendFailure as exc:
            table.append({**asdict(c), "skipped": f"failed on a batch: {exc.message}"})
        finally:
            backend.close()
    timed = [row for row in table if "items_per_s" in row]
    if not timed:
        raise ServiceError(f"no engine could score {root}: " + "; ".join(f"{r['backend']} {r['variant']}: "
                                                                         f"{r['skipped']}" for r in table))
    best = max(timed, key=lambda row: row["items_per_s"])
    choice = Choice(best["backend"], best["variant"], best["streams"], "measured", [*table, *skipped])
    if record is not None:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(choice), indent=1), encoding="utf-8")
            tmp.replace(record)
        except OSError as exc:  # a read-only home only costs timing again at the next start
            log.warning("cannot remember the engine choice in %s: %s", record, exc)
    return choice


def replace_settings(settings: ServiceSettings, c: Candidate) -> ServiceSettings:
    """``settings`` for one candidate."""
    return settings.model_copy(update={"backend": c.backend, "variant": c.variant, "streams": c.streams})


def log_table(name: str, choice: Choice) -> None:
    """The table, one line per candidate, in the log."""
    for row in choice.table:
        if "items_per_s" in row:
            figure = f"{row['items_per_s']:.1f} items/s"
        else:
            figure = f"not timed: {row['skipped']}" if "skipped" in row else "the only candidate"
        mark = "*" if (row["backend"], row["variant"], row["streams"]) == (choice.backend, choice.variant,
                                                                          choice.streams) else " "
        log.info("%s engine %s %s/%s, %d stream(s): %s", name, mark, row["backend"], row["variant"], row["streams"],
                 figure)
    log.info("%s serves on %s %s with %d stream(s) (%s)", name, choice.backend, choice.variant, choice.streams,
             choice.how)

