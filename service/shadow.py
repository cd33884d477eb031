"""Shadow traffic: a request's inputs scored again on its model's shadow, in the background, and how the two
agree recorded (``rewardserve_shadow_*``). The primary's answer never waits for its shadow, and a shadow's
failure only counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import numpy as np

from service.engine import ScoreCall, Scored, ScoreInput
from service.hooks import Answered
from service.metrics import Metrics
from service.registry import Resolved

log = logging.getLogger(__name__)


class Shadows:
    """The hook that starts a request's shadow scoring, and the one owner of the tasks still running."""

    def __init__(self, metrics: Metrics, draining: Callable[[], bool]) -> None:
        """``draining``: true once the service drains (no shadow starts then)."""
        self._metrics = metrics
        self._draining = draining
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, answered: Answered) -> None:
        # a personal request is not shadowed: the shadow does not know the user's reward
        if answered.resolved.shadow is None or answered.call.user is not None or self._draining():
            return
        task = asyncio.get_running_loop().create_task(
            compare_shadow(answered.resolved, answered.call.inputs, answered.scored, answered.rerank, self._metrics))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for the shadows still scoring (they hold their target admitted until done)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def compare_shadow(resolved: Resolved, inputs: Sequence[ScoreInput], primary: Scored, rerank: bool,
                         metrics: Metrics) -> None:
    """Score ``inputs`` on the shadow and record its agreement with the primary's answer."""
    shadow = resolved.shadow
    assert shadow is not None
    labels = (resolved.entry, shadow.name)
    try:
        with shadow.admit():
            theirs = await shadow.score(ScoreCall(inputs, primary.normalized))
    except Exception as exc:  # a shadow never harms the primary's answer; count it and move on
        metrics.shadow_failed.labels(*labels).inc()
        log.debug("shadow %s failed: %s", shadow.name, exc)
        return
    if len(inputs) > 1:
        metrics.shadow_rank.labels(*labels).observe((1 + kendall_tau(primary.scores, theirs.scores)) / 2)
    if rerank:
        same = int(np.argmax(primary.scores)) == int(np.argmax(theirs.scores))
        metrics.shadow_top.labels(*labels, "match" if same else "differ").inc()


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a between two score lists (pairs tied in either count as neither)."""
    x, y = np.asarray(a), np.asarray(b)
    i, j = np.triu_indices(len(x), 1)
    concordance = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return float(concordance.mean()) if len(i) else 1.0
