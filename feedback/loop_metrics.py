"""The loop's series, read from the store's record of rounds (``retrain_rounds``, :mod:`feedback.rounds`):

- ``rewardserve_retrain_rounds_total{model,result}``: rounds of ``rewardserve retrain`` by result (promoted,
  exported, refused, skipped, rolled_back);
- ``rewardserve_retrain_last_round_timestamp_seconds{model}``: when the newest round finished;
- ``rewardserve_retrain_parent_accuracy{model,version,parent}``: for each model's newest promotion, its parent's
  live accuracy when it was replaced: what the promoted version's live accuracy
  (``rewardserve_feedback_agreement_ratio``) is held to by the alert ``RetrainedModelWorseThanParent``.

A scrape never waits on the database: it reads the last snapshot, and a stale one (older than
:data:`REFRESH_S`) is refreshed in the background on the stage's reader thread, for the next scrape. Every
replica with the store exports the same figures (they come from the database), so dashboards take ``max``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from feedback.errors import FeedbackError
from feedback.rounds import RoundsSnapshot, rounds_snapshot
from feedback.store import FeedbackStore

log = logging.getLogger(__name__)

REFRESH_S = 30.0


class LoopMetrics(Collector):
    """The rounds' series, from a snapshot refreshed off the scrape's path."""

    def __init__(self, registry: CollectorRegistry, store: FeedbackStore, executor: Executor,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._executor = executor
        self._clock = clock
        self._snapshot = RoundsSnapshot()
        self._read_at = -REFRESH_S
        self._refreshing = False
        self._lock = threading.Lock()
        registry.register(self)

    def refresh(self) -> None:
        """Read the record now (on the caller's thread); a failure keeps the last figures until the next try."""
        snapshot = None
        try:
            snapshot = rounds_snapshot(self._store)
        except FeedbackError as exc:  # the database is away
            log.debug("the rounds were not read: %s", exc.message)
        except Exception:  # a bug must not stop every later refresh: say so, and try again later
            log.exception("reading the retraining rounds failed")
        finally:
            with self._lock:
                if snapshot is not None:
                    self._snapshot = snapshot
                self._read_at = self._clock()
                self._refreshing = False

    def describe(self) -> list[Metric]:
        return []  # the families depend on the data: registered without a describe-time collect

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._snapshot
            stale = self._clock() - self._read_at >= REFRESH_S and not self._refreshing
            if stale:
                self._refreshing = True
        if stale:
            try:
                self._executor.submit(self.refresh)
            except RuntimeError:  # the reader pool is shut down (the app is closing): no refresh, no stuck flag
                with self._lock:
                    self._refreshing = False
        rounds = CounterMetricFamily("rewardserve_retrain_rounds", "rounds of rewardserve retrain, by result",
                                     labels=["model", "result"])
        for (model, result), n in sorted(snapshot.counts.items()):
            rounds.add_metric([model, result], n)
        last = GaugeMetricFamily("rewardserve_retrain_last_round_timestamp_seconds",
                                 "when the newest round of rewardserve retrain finished", labels=["model"])
        for model, moment in sorted(snapshot.last.items()):
            last.add_metric([model], moment.timestamp())
        parent = GaugeMetricFamily("rewardserve_retrain_parent_accuracy", "the parent's live accuracy when the "
                                   "model's newest promotion replaced it", labels=["model", "version", "parent"])
        for model, promoted in sorted(snapshot.promoted.items()):
            if promoted.result == "promoted" and promoted.parent_accuracy is not None and promoted.version:
                parent.add_metric([model, promoted.version, promoted.parent_version or ""], promoted.parent_accuracy)
        yield rounds
        yield last
        yield parent
