"""The feedback stage's Prometheus series, on the registry the service gives it.

- ``rewardserve_feedback_events_total{form,source}``: events stored (duplicates not counted);
- ``rewardserve_feedback_agreement_ratio{model}``: over the last :data:`WINDOW_S`, the share of human
  pairwise preferences that ``model``'s scores at the time ordered the same way (live accuracy), computed
  at scrape time from the events this process stored;
- ``rewardserve_feedback_agreement_pairs{model}``: how many pairs that ratio stands on (a ratio over
  three pairs is noise; alerts should require a minimum).

Label values come from clients, so each label keeps its first :data:`MAX_LABEL_VALUES` values and reports
the rest as ``other``: a client cannot blow up the series count.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from feedback.events import FeedbackEvent
from feedback.judgements import FORMS, preferred_pairs, scored_correctly

WINDOW_S = 3600.0
"""The rolling window of the agreement ratio."""
MAX_WINDOW_EVENTS = 100_000
MAX_LABEL_VALUES = 32


class BoundedLabel:
    """A label's first ``limit`` values pass; later new ones read ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return "other"


class FeedbackMetrics(Collector):
    """Counts stored events and keeps the window behind the agreement ratio (one per app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("rewardserve_feedback_events", "feedback events stored, by form and source",
                              ["form", "source"], registry=registry)
        for form in FORMS:
            self.events.labels(form, "none")
        self.profile_fits = Counter("rewardserve_profile_fits", "personal-reward profiles refitted after new "
                                    "judgements, by result (ok, failed)", ["result"], registry=registry)
        for result in ("ok", "failed"):
            self.profile_fits.labels(result)
        self._source = BoundedLabel()
        self._model = BoundedLabel()
        self._window: deque[tuple[float, str, int, int]] = deque(maxlen=MAX_WINDOW_EVENTS)
        self._lock = threading.Lock()  # stored() runs on the event loop, collect() on the scrape's thread
        registry.register(self)

    def stored(self, events: Sequence[FeedbackEvent], now: float | None = None) -> None:
        """``events`` were stored (new ones only)."""
        now = time.monotonic() if now is None else now
        for e in events:
            self.events.labels(e.form, self._source(e.source or "none")).inc()
            if e.scores is not None and e.reward_model is not None and (pairs := preferred_pairs(e)):
                with self._lock:
                    self._window.append((now, self._model(e.reward_model), len(pairs),
                                         scored_correctly(e.scores, pairs)))

    def collect(self, now: float | None = None) -> Iterator[GaugeMetricFamily]:
        """The window's ratio and pair count per model (the scrape calls this)."""
        now = time.monotonic() if now is None else now
        totals: dict[str, list[int]] = {}
        with self._lock:
            while self._window and self._window[0][0] < now - WINDOW_S:
                self._window.popleft()
            for _, model, pairs, correct in self._window:
                t = totals.setdefault(model, [0, 0])
                t[0] += pairs
                t[1] += correct
        ratio = GaugeMetricFamily("rewardserve_feedback_agreement_ratio", "share of human pairwise preferences in "
                                  "the last hour that the model's scores ordered the same way", labels=["model"])
        count = GaugeMetricFamily("rewardserve_feedback_agreement_pairs", "human pairwise preferences behind "
                                  "rewardserve_feedback_agreement_ratio", labels=["model"])
        for model, (pairs, correct) in sorted(totals.items()):
            ratio.add_metric([model], correct / pairs)
            count.add_metric([model], pairs)
        yield ratio
        yield count
