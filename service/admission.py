"""Admission by time: a request is queued only if its scores are likely ready before its deadline.

A count of queued items (``max_queue_items``) says nothing about time: on a 2-core AVX2 machine the default
4,096 items took ~68 s to score, past the 60 s deadline, so requests admitted at the back of the queue got 504
or no answer at all (benchmarks/auto_engine.py's overload probe). The scheduler therefore estimates when a new
request would finish, the tokens in the system ahead of it plus its own divided by the tokens per second it
measures (and the same in items), and answers 429 at once, with ``Retry-After`` from the same estimate, when
that is past the deadline. ``max_queue_items`` stays as the bound on memory.

The rates are measured on the batches themselves (exponentially weighted means, seeded by the warm-up), in
items and in *real* tokens, so padding and per-batch overhead are in them; the estimate takes the longer of
the two, as the work queued may be shorter or longer items than the batches measured. With several backend
streams each batch's rate counts once per stream, as the streams run side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ADMIT_SHARE = 0.8
"""A request is admitted when its expected completion falls within this share of the time left to its
deadline: the estimate is a mean over recent batches, and a request's last batch may run slower than it."""
SMOOTHING = 0.2
"""Weight of the newest batch in the rates' moving means."""
MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class Work:
    """Items and their real tokens."""

    items: int
    tokens: int

    def __add__(self, other: Work) -> Work:
        return Work(self.items + other.items, self.tokens + other.tokens)


class Throughput:
    """What the backend does per second, as moving means over its batches (one owner: the scheduler)."""

    def __init__(self, streams: int = 1, seed: tuple[Work, float] | None = None) -> None:
        """``seed``: one warm-up batch's work and seconds (each stream ran one such batch at once), what the
        estimates start from until real batches are measured."""
        self._streams = streams
        self.items_per_s = 0.0
        """Items per second of all streams together (0: nothing measured)."""
        self.tokens_per_s = 0.0
        """Real tokens per second of all streams together."""
        self.padded_tokens_per_s = 0.0
        """Padded tokens per second of one batch: what a batch's expected time is read from."""
        if seed is not None:
            self.add(seed[0], seed[0].tokens, seed[1])

    def add(self, work: Work, padded_tokens: int, seconds: float) -> None:
        """One batch of ``work`` (``padded_tokens`` once padded) ran in ``seconds``."""
        seconds = max(seconds, 1e-6)
        self.items_per_s = _mean(self.items_per_s, self._streams * work.items / seconds)
        self.tokens_per_s = _mean(self.tokens_per_s, self._streams * work.tokens / seconds)
        self.padded_tokens_per_s = _mean(self.padded_tokens_per_s, padded_tokens / seconds)

    def seconds(self, work: Work) -> float:
        """How long ``work`` likely takes (0: nothing measured yet). Both rates bound it: a batch's time grows
        with its tokens (the matrix products) and with its rows (per-row heads, copies), and which one rules
        depends on the items' lengths, which differ between the batches measured and the work queued."""
        if not self.items_per_s:
            return 0.0
        return max(work.items / self.items_per_s, work.tokens / self.tokens_per_s)

    def __str__(self) -> str:
        return f"{self.items_per_s:.0f} items/s, {self.tokens_per_s:.0f} tokens/s"


def _mean(old: float, new: float) -> float:
    return new if not old else (1 - SMOOTHING) * old + SMOOTHING * new


@dataclass(frozen=True)
class Verdict:
    """Whether a request fits before its deadline, and why not."""

    expected_s: float
    """Seconds until the request's scores are likely ready (0: not estimated)."""
    allowed_s: float
    """Seconds it may take: :data:`ADMIT_SHARE` of the time left to its deadline."""

    @property
    def admitted(self) -> bool:
        """The estimate fits (or there was none to make)."""
        return self.expected_s <= self.allowed_s

    @property
    def retry_after_s(self) -> int:
        """Seconds until enough of the work ahead is done for the request to fit (1-60)."""
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(self.expected_s - self.allowed_s)))


def judge(ahead: Work, own: Work, rate: Throughput, time_left_s: float) -> Verdict:
    """The verdict on a request of ``own`` work behind ``ahead``, with ``time_left_s`` to its deadline.

    With nothing ahead the request is admitted whatever its size: an idle server has nothing better to do, and
    the request limits (``max_items_per_request``, ``max_request_tokens``) bound it. With no rate measured yet
    (no warm-up, no batch) there is nothing to estimate from, and ``max_queue_items`` alone bounds admission.
    """
    allowed = ADMIT_SHARE * max(0.0, time_left_s)
    if not ahead.items:
        return Verdict(0.0, allowed)
    return Verdict(rate.seconds(ahead + own), allowed)
