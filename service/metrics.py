"""Prometheus metrics, exactly the names of DESIGN §6 (prefix ``rewardserve_``, base units).

One :class:`Metrics` per app, on its own registry (several apps in one process, as in tests, do not
collide). It implements the scheduler's and the engine's observer protocols, so they report without
knowing Prometheus exists. ``k8s/`` dashboards and alerts use these names only.
"""

from __future__ import annotations

from collections.abc import Callable

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
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Reasons exported at 0 from the start: a rate() over a series that appears only with the first
# rejection reads as "no data" rather than 0, in alerts and on the dashboard.
CAPACITY_REASONS = ("overloaded", "deadline_exceeded", "not_ready", "draining")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's instruments on one registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("rewardserve_requests_total", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.request_duration = Histogram("rewardserve_request_duration_seconds", "HTTP request latency, end to end",
                                          ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("rewardserve_queue_wait_seconds", "time an item waited for a batch",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("rewardserve_inference_duration_seconds", "backend time per batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("rewardserve_batch_size_items", "items per batch", buckets=ITEM_BUCKETS,
                                    registry=r)
        self.batch_tokens = Histogram("rewardserve_batch_tokens", "padded tokens (rows × longest) per batch",
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.batch_padding = Histogram("rewardserve_batch_padding_ratio", "share of a batch's tokens that are padding",
                                       buckets=RATIO_BUCKETS, registry=r)
        self.queue_depth = Gauge("rewardserve_queue_depth_items", "items waiting for a batch", registry=r)
        self.inflight = Gauge("rewardserve_inflight_requests", "HTTP requests being handled (probes excluded)",
                              registry=r)
        self.items = Counter("rewardserve_items_total", "items scored (as sent, duplicates included)", registry=r)
        self.tokens = Counter("rewardserve_tokens_total", "input tokens scored, after truncation", registry=r)
        self.truncated = Counter("rewardserve_truncated_items_total", "items cut to the token limit", registry=r)
        self.rejected = Counter("rewardserve_rejected_total", "requests refused, by reason (the error type)",
                                ["reason"], registry=r)
        for reason in CAPACITY_REASONS:
            self.rejected.labels(reason)
        # Not in DESIGN §6's list: /readyz as a series, so an alert can see a pod that never gets ready
        # (the probe only hides it from the Service) and the dashboard can count ready replicas.
        self.ready = Gauge("rewardserve_ready", "1 when the model is loaded, warm and not draining (/readyz is 200)",
                           registry=r)
        self.model_info = Gauge("rewardserve_model_info", "the served model (value 1)",
                                ["model", "backend", "device", "dtype"], registry=r)

    # SchedulerObserver
    def item_waited(self, seconds: float) -> None:
        """One item left the queue."""
        self.queue_wait.observe(seconds)

    def batch(self, items: int, padded_tokens: int, padding_ratio: float, seconds: float) -> None:
        """One batch ran."""
        self.batch_size.observe(items)
        self.batch_tokens.observe(padded_tokens)
        self.batch_padding.observe(padding_ratio)
        self.inference.observe(seconds)

    # UsageObserver
    def scored(self, items: int, tokens: int, truncated: int) -> None:
        """One request's items were scored."""
        self.items.inc(items)
        self.tokens.inc(tokens)
        self.truncated.inc(truncated)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from the scheduler at scrape time."""
        self.queue_depth.set_function(depth)

    def track_readiness(self, ready: Callable[[], bool]) -> None:
        """Read readiness from the service state at scrape time."""
        self.ready.set_function(lambda: float(ready()))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
