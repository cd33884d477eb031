"""Serve-time monitors of what the reward model sees and says: the early signs of reward hacking.

For each served model version and RL run (``x-run-id``; none: ``run=""``), the last ``window_items``
scored items are kept in one bounded ring (reward, completion length, truncation, a hash of the
completion, ensemble disagreement, arrival time). Scoring only appends to it; every figure is computed
when Prometheus scrapes (:meth:`Monitors.collect`), over two windows: the last 5 minutes (``window="5m"``)
and the last ``window_items`` items (``window="items"``). Runs are kept least-recently-used up to
``max_runs``, so a trainer inventing run ids cannot grow memory or series without bound.

Metrics (``rewardserve_monitor_*``, labels ``model, version, run, window``): items, reward mean and std,
z-shift of the mean against the card's reference normalization (without one, e.g. an imported model's, against
a baseline window: the first :data:`BASELINE_ITEMS` items the version scored for the run), Spearman of reward
with completion length, mean completion length, truncated share, share of items beyond ``out_of_range_z`` reference
stds, duplicate-completion share, and ensemble disagreement; plus the histogram
``rewardserve_monitor_reward_z`` of standardized rewards (labels ``model, version, run``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rewardmodel import Normalization
from rewardmodel.metrics import pearson, rankdata

Z_BUCKETS = (-4.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
WINDOW_S = 300.0
"""The time window ("5m")."""


@dataclass(frozen=True)
class Observed:
    """One request's items as a monitor reads them."""

    rewards: Sequence[float]
    lengths: Sequence[int]
    """Completion tokens of each item."""
    truncated: Sequence[bool]
    completions: Sequence[str]
    disagreement: Sequence[float] | None = None
    """An ensemble's per-item std across members."""


BASELINE_ITEMS = 1000
"""Without a card normalization, the first this many items a version scores for a run (or its window, when
smaller) are the reference the later windows are measured against."""


class _Ring:
    """The last ``size`` items of one (model, version, run): parallel numpy rings, one writer at a time."""

    def __init__(self, size: int, reference: Normalization | None) -> None:
        self.size = size
        self.reference = reference
        self.baseline = min(size, BASELINE_ITEMS) if reference is None else 0
        """Items still to come before the baseline window is the reference (0: it has one)."""
        self.count = 0
        self.time = np.zeros(size)
        self.reward = np.zeros(size)
        self.length = np.zeros(size)
        self.truncated = np.zeros(size, dtype=bool)
        self.digest = np.zeros(size, dtype=np.int64)
        self.disagreement = np.full(size, np.nan)

    def add(self, now: float, seen: Observed) -> None:
        n = len(seen.rewards)
        digests = [int.from_bytes(hashlib.blake2b(c.encode(), digest_size=8).digest(), "big", signed=True)
                   for c in seen.completions]
        for i in range(n):  # a request holds at most max_items_per_request items: a short loop
            slot = self.count % self.size
            self.time[slot], self.reward[slot], self.length[slot] = now, seen.rewards[i], seen.lengths[i]
            self.truncated[slot], self.digest[slot] = seen.truncated[i], digests[i]
            self.disagreement[slot] = seen.disagreement[i] if seen.disagreement is not None else np.nan
            self.count += 1
            if self.baseline and self.count == self.baseline:  # the first items, before the ring wraps
                first = self.reward[:self.baseline]
                self.reference = Normalization(float(first.mean()), max(float(first.std()), 1e-6),
                                               reference=f"baseline: the first {self.baseline} items",
                                               count=self.baseline)
                self.baseline = 0

    def window(self, since: float | None) -> np.ndarray:
        """Indices of the ring's items, oldest first, arrived at or after ``since`` (None: all kept)."""
        kept = min(self.count, self.size)
        start = self.count - kept
        idx = np.arange(start, self.count) % self.size
        return idx if since is None else idx[self.time[idx] >= since]


class Monitors(Collector):
    """The one owner of every monitor ring; registered on the service's Prometheus registry."""

    def __init__(self, registry: CollectorRegistry, window_items: int = 10_000, max_runs: int = 32,
                 out_of_range_z: float = 4.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.window_items = window_items
        self.max_runs = max_runs
        self.out_of_range_z = out_of_range_z
        self._rings: OrderedDict[tuple[str, str, str], _Ring] = OrderedDict()
        self._lock = threading.Lock()  # scrapes run on a worker thread, observations on the event loop
        self._z = Histogram("rewardserve_monitor_reward_z", "scored rewards standardized by the card's reference "
                            "normalization (raw rewards when the card has none)", ["model", "version", "run"],
                            buckets=Z_BUCKETS, registry=registry)
        registry.register(self)

    def observe(self, model: str, version: str, run: str, reference: Normalization | None, seen: Observed) -> None:
        """Add one request's items (cheap: a few array writes; the figures are computed at scrape time)."""
        key = (model, version, run)
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = _Ring(self.window_items, reference)
                self._evict()
            self._rings.move_to_end(key)
            ring.add(self._clock(), seen)
        child = self._z.labels(*key)
        for r in seen.rewards:
            child.observe((r - reference.mean) / reference.std if reference else r)

    def forget(self, model: str, version: str) -> None:
        """A released version: drop its rings and series."""
        with self._lock:
            for key in [k for k in self._rings if k[:2] == (model, version)]:
                self._drop(key)

    def _evict(self) -> None:
        runs = {k[2] for k in self._rings if k[2]}
        while len(runs) > self.max_runs:
            oldest = next(k for k in self._rings if k[2])  # least recently used run (not chat traffic)
            for key in [k for k in self._rings if k[2] == oldest[2]]:
                self._drop(key)
            runs.discard(oldest[2])

    def _drop(self, key: tuple[str, str, str]) -> None:
        del self._rings[key]
        try:
            self._z.remove(*key)
        except KeyError:
            pass

    def describe(self) -> list[GaugeMetricFamily]:
        """No fixed description: the series depend on what was scored."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Every figure over each window of each ring, computed now."""
        labels = ["model", "version", "run", "window"]
        families = {name: GaugeMetricFamily(f"rewardserve_monitor_{name}", text, labels=labels)
                    for name, text in DESCRIPTIONS.items()}
        now = self._clock()
        with self._lock:
            rings = [(key, ring, {w: ring.window(since) for w, since in
                                  (("5m", now - WINDOW_S), ("items", None))}) for key, ring in self._rings.items()]
            figures = [(key, w, self._figures(ring, idx)) for key, ring, windows in rings
                       for w, idx in windows.items() if len(idx)]
        for key, w, values in figures:
            for name, value in values.items():
                if value is not None:
                    families[name].add_metric([*key, w], value)
        yield from families.values()

    def _figures(self, ring: _Ring, idx: np.ndarray) -> dict[str, float | None]:
        reward, length = ring.reward[idx], ring.length[idx]
        ref = ring.reference
        mean, std = float(reward.mean()), float(reward.std())
        z = (reward - ref.mean) / ref.std if ref else None
        digests = ring.digest[idx]
        disagreement = ring.disagreement[idx]
        return {
            "items": float(len(idx)),
            "reward_mean": mean,
            "reward_std": std,
            "reward_z_shift": (mean - ref.mean) / ref.std if ref else None,
            "reward_std_ratio": std / ref.std if ref else None,
            "length_spearman": (pearson(rankdata(reward), rankdata(length)) if len(idx) > 2 and
                                reward.std() > 0 and length.std() > 0 else None),
            "length_mean": float(length.mean()),
            "truncated_ratio": float(ring.truncated[idx].mean()),
            "out_of_range_ratio": float((np.abs(z) > self.out_of_range_z).mean()) if z is not None else None,
            "duplicate_ratio": 1.0 - len(np.unique(digests)) / len(digests),
            "ensemble_disagreement": (float(np.nanmean(disagreement)) if not np.isnan(disagreement).all()
                                      else None),
        }


DESCRIPTIONS = {
    "items": "items in the window",
    "reward_mean": "mean reward in the window",
    "reward_std": "std of the reward in the window",
    "reward_z_shift": "(window mean - the card's reference mean) / reference std: how far the reward has drifted",
    "reward_std_ratio": "window std / the card's reference std",
    "length_spearman": "Spearman correlation of reward with completion length (tokens) in the window",
    "length_mean": "mean completion length in tokens",
    "truncated_ratio": "share of items cut to the token limit",
    "out_of_range_ratio": "share of items more than out_of_range_z reference stds from the reference mean",
    "duplicate_ratio": "share of items whose completion text repeats an earlier one in the window (mode collapse)",
    "ensemble_disagreement": "mean std of an ensemble's standardized member rewards per item",
}
