"""Prometheus metrics, exactly the names of docs/design.md §6 (prefix ``rewardserve_``, base units).

One :class:`Metrics` per app, on its own registry (several apps in one process, as in tests, do not
collide). It implements the scheduler's and the engine's observer protocols, so they report without
knowing Prometheus exists. ``k8s/`` dashboards and alerts use these names only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created series double the exposition and no dashboard reads them

# milliseconds to tens of seconds: a CPU batch of long items takes seconds, a GPU batch a few ms
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITEM_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)
AGREEMENT_BUCKETS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
STD_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Reasons exported at 0 from the start: a rate() over a series that appears only with the first
# rejection reads as "no data" rather than 0, in alerts and on the dashboard.
CAPACITY_REASONS = ("overloaded", "deadline_exceeded", "not_ready", "draining")

CONTENT_TYPE = CONTENT_TYPE_LATEST


PERSONAL_KINDS = ("none", "personal", "population")
SHIFT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class Metrics:
    """The service's instruments on one registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("rewardserve_requests_total", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.request_duration = Histogram("rewardserve_request_duration_seconds", "HTTP request latency, end to end",
                                          ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        per_model = ["model", "version"]  # which version did the work: a swap or a split shows on every panel
        self.queue_wait = Histogram("rewardserve_queue_wait_seconds", "time an item waited for a batch",
                                    per_model, buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("rewardserve_inference_duration_seconds", "backend time per batch",
                                   per_model, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("rewardserve_batch_size_items", "items per batch", per_model,
                                    buckets=ITEM_BUCKETS, registry=r)
        self.batch_tokens = Histogram("rewardserve_batch_tokens",
                                      "tokens computed per batch: rows × longest padded, the real tokens packed",
                                      per_model, buckets=TOKEN_BUCKETS, registry=r)
        self.batch_padding = Histogram("rewardserve_batch_padding_ratio", "share of a batch's tokens that are padding",
                                       per_model, buckets=RATIO_BUCKETS, registry=r)
        self.queue_depth = Gauge("rewardserve_queue_depth_items", "items waiting for a batch", registry=r)
        self.inflight = Gauge("rewardserve_inflight_requests", "HTTP requests being handled (probes excluded)",
                              registry=r)
        self.items = Counter("rewardserve_items_total", "items scored (as sent, duplicates included)", per_model,
                             registry=r)
        self.tokens = Counter("rewardserve_tokens_total", "input tokens scored, after truncation", per_model,
                              registry=r)
        self.truncated = Counter("rewardserve_truncated_items_total", "items cut to the token limit", per_model,
                                 registry=r)
        self.rejected = Counter("rewardserve_rejected_total", "requests refused, by reason (the error type)",
                                ["reason"], registry=r)
        for reason in CAPACITY_REASONS:
            self.rejected.labels(reason)
        # /readyz as a series, so an alert can see a pod that never gets ready
        # (the probe only hides it from the Service) and the dashboard can count ready replicas.
        self.ready = Gauge("rewardserve_ready", "1 when the model is loaded, warm and not draining (/readyz is 200)",
                           registry=r)
        self.model_info = Gauge("rewardserve_model_info", "each served model version (value 1; gone once released)",
                                ["model", "version", "backend", "device", "dtype"], registry=r)
        self.engine = Gauge("rewardserve_engine_info", "the engine each served model version runs on (value 1), and "
                            "how it was chosen: measured or remembered (--backend auto), only (the one the bundle "
                            "has), flags", ["model", "version", "backend", "variant", "streams", "chosen"],
                            registry=r)
        self.swaps = Counter("rewardserve_model_swaps_total", "hot swaps by model and result (ok, failed)",
                             ["model", "result"], registry=r)
        self.split = Counter("rewardserve_split_requests_total", "requests a traffic split sent to each target",
                             ["model", "target", "version"], registry=r)
        self.shadow_rank = Histogram("rewardserve_shadow_rank_agreement", "per request: share of item pairs the "
                                     "shadow orders as the primary does, (1 + Kendall tau) / 2 (1: same order, "
                                     "0.5: unrelated)",
                                     ["model", "shadow"], buckets=AGREEMENT_BUCKETS, registry=r)
        self.shadow_top = Counter("rewardserve_shadow_top_match_total", "reranks where the shadow picked the "
                                  "primary's best candidate, by outcome (match, differ)",
                                  ["model", "shadow", "outcome"], registry=r)
        self.shadow_failed = Counter("rewardserve_shadow_failures_total", "shadow scorings that failed (the "
                                     "primary answered anyway)", ["model", "shadow"], registry=r)
        self.scored_requests = Counter("rewardserve_scored_requests_total", "requests scored, by whose reward: none "
                                       "(the plain reward), personal (a user's profile) or population (a user "
                                       "without one yet)", [*per_model, "personal"], registry=r)
        self.personal_shift = Histogram("rewardserve_personal_shift", "per item of a personal request: |personal "
                                        "reward − population reward|", per_model, buckets=SHIFT_BUCKETS, registry=r)
        self.ensemble_std = Histogram("rewardserve_ensemble_disagreement", "per item: std of an ensemble's "
                                      "standardized member rewards", ["model"], buckets=STD_BUCKETS, registry=r)

    def for_model(self, name: str, version: str) -> ModelMetrics:
        """The instruments of one model version (what its scheduler and engine report to)."""
        return ModelMetrics(self, name, version)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the queue depth (every model's, summed) at scrape time."""
        self.queue_depth.set_function(depth)

    def track_readiness(self, ready: Callable[[], bool]) -> None:
        """Read readiness from the service state at scrape time."""
        self.ready.set_function(lambda: float(ready()))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class ModelMetrics:
    """One model version's labelled children: the scheduler's and the engine's observer."""

    def __init__(self, metrics: Metrics, name: str, version: str) -> None:
        m, labels = metrics, (name, version)
        self._metrics, self._labels = m, labels
        self._info: tuple[str, ...] | None = None
        self._engine: tuple[str, ...] | None = None
        self._wait = m.queue_wait.labels(*labels)
        self._size, self._tokens_b = m.batch_size.labels(*labels), m.batch_tokens.labels(*labels)
        self._padding, self._inference = m.batch_padding.labels(*labels), m.inference.labels(*labels)
        self._items, self._tokens, self._truncated = (m.items.labels(*labels), m.tokens.labels(*labels),
                                                      m.truncated.labels(*labels))

    def loaded(self, backend: str, device: str, dtype: str) -> None:
        """The version is serving: its ``model_info`` series appears."""
        self._info = (*self._labels, backend, device, dtype)
        self._metrics.model_info.labels(*self._info).set(1)

    def engine(self, backend: str, variant: str, streams: int, chosen: str) -> None:
        """The engine the version serves on: its ``engine_info`` series appears."""
        self._engine = (*self._labels, backend, variant, str(streams), chosen)
        self._metrics.engine.labels(*self._engine).set(1)

    def forget(self) -> None:
        """The version was released: drop its series, so dashboards show what is served."""
        m = self._metrics
        for metric in (m.queue_wait, m.inference, m.batch_size, m.batch_tokens, m.batch_padding, m.items, m.tokens,
                       m.truncated, m.personal_shift):
            with contextlib.suppress(KeyError):
                metric.remove(*self._labels)
        if self._info is not None:
            with contextlib.suppress(KeyError):
                m.model_info.remove(*self._info)
        for kind in PERSONAL_KINDS:
            with contextlib.suppress(KeyError):
                m.scored_requests.remove(*self._labels, kind)
        if self._engine is not None:
            with contextlib.suppress(KeyError):
                m.engine.remove(*self._engine)

    # SchedulerObserver
    def item_waited(self, seconds: float) -> None:
        """One item left the queue."""
        self._wait.observe(seconds)

    def batch(self, items: int, padded_tokens: int, padding_ratio: float, seconds: float) -> None:
        """One batch ran."""
        self._size.observe(items)
        self._tokens_b.observe(padded_tokens)
        self._padding.observe(padding_ratio)
        self._inference.observe(seconds)

    # UsageObserver
    def scored(self, items: int, tokens: int, truncated: int, personal: str = "none") -> None:
        """One request's items were scored (``personal``: whose reward, one of :data:`PERSONAL_KINDS`)."""
        self._items.inc(items)
        self._tokens.inc(tokens)
        self._truncated.inc(truncated)
        self._metrics.scored_requests.labels(*self._labels, personal).inc()

    def shifted(self, shifts: Sequence[float]) -> None:
        """How far a personal request's rewards moved from the population's, per item."""
        child = self._metrics.personal_shift.labels(*self._labels)
        for shift in shifts:
            child.observe(shift)
