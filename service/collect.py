"""Choosing live traffic for human labeling (``--collect-for-labeling``; off by default: it stores user text).

Each /rerank, and each prompt of a /score request that scores several completions of it, is offered to
:class:`LiveSampler` after it is answered. A sampled item goes to the labeling queue with a priority that
says how unsure the model was: an ensemble's mean disagreement across members, or else minus the score
margin between the two best candidates (a near tie comes first). The sampling rate and an hourly cap bound
what is stored; the queue keeps one task per prompt and set of completions.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

Push = Callable[[Any, list[str], float], None]
"""Queue one item: (prompt, completions, priority). The composer (service.app) binds it to the queue."""


class LiveSampler:
    """The sampling decision; one per app, on the event loop."""

    def __init__(self, rate: float, per_hour: int, push: Push, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.rate = rate
        self.per_hour = per_hour
        self._push = push
        self._clock = clock
        self._rng = rng or random.Random()
        self._recent: deque[float] = deque()

    def offer(self, prompt: Any, completions: Sequence[str], scores: Sequence[float],
              disagreement: Sequence[float] | None = None) -> bool:
        """Queue this prompt's candidates (by rate, under the hourly cap); True when it was queued."""
        distinct = list(dict.fromkeys(completions))
        if len(distinct) < 2 or len(distinct) > 9 or self._rng.random() >= self.rate:
            return False
        now = self._clock()
        while self._recent and self._recent[0] < now - 3600:
            self._recent.popleft()
        if len(self._recent) >= self.per_hour:
            return False
        self._recent.append(now)
        self._push(prompt, distinct, uncertainty(scores, disagreement))
        return True


def uncertainty(scores: Sequence[float], disagreement: Sequence[float] | None = None) -> float:
    """How unsure the model was about these candidates: higher is less sure."""
    if disagreement:
        return float(sum(disagreement) / len(disagreement))
    top = sorted(scores, reverse=True)
    return -(top[0] - top[1])
