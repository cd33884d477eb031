"""What runs after a scoring request is answered: the hooks the app registers on :class:`ServiceState`.

Scoring does not call back up into the state: ``plumbing.score_for`` hands each answer, as one
:class:`Answered` value, to the hooks the composer (``service.app``) chose: the reward-hacking monitors,
the live sampler for labeling, the shadow. A hook runs on the event loop after the answer is ready and
must not block it; a hook that fails is logged and never harms the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from service.collect import LiveSampler
from service.deployment import Version
from service.engine import ScoreCall, Scored, WholeText
from service.monitors import Monitors, Observed
from service.registry import Resolved


@dataclass(frozen=True)
class Answered:
    """One answered scoring request, as the hooks see it."""

    resolved: Resolved
    call: ScoreCall
    """What was scored (its ``user`` set for a personal request)."""
    scored: Scored
    run: str = ""
    """The RL run (``x-run-id``) the request came from."""
    rerank: bool = False
    """The request picks a best candidate (``/rerank`` and its adapters)."""


class Hook(Protocol):
    """Told of every answered scoring request; closed once when the service drains."""

    def after(self, answered: Answered) -> None:
        """Take one answer (on the event loop: quick, or in a background task)."""

    async def close(self) -> None:
        """Finish what the hook started (the drain waits for it before the models are released)."""


class MonitorHook:
    """Feeds the reward-hacking monitors (:mod:`service.monitors`) each request's raw rewards."""

    def __init__(self, monitors: Monitors) -> None:
        self.monitors = monitors

    def after(self, answered: Answered) -> None:
        scored = answered.scored
        if scored.lengths is None or scored.truncated_flags is None:
            return
        target = answered.resolved.target
        reference = target.card.normalization if isinstance(target, Version) else None
        texts = [x.text[x.prompt_chars:] if isinstance(x, WholeText) else x[1] for x in answered.call.inputs]
        self.monitors.observe(target.name, target.version, answered.run, reference,
                              Observed(scored.raw_scores, scored.lengths, scored.truncated_flags, texts,
                                       scored.disagreement))

    async def close(self) -> None:
        return None


class CollectHook:
    """Offers each prompt with several scored completions to the labeling sampler (``--collect-for-labeling``)."""

    def __init__(self, sampler: LiveSampler) -> None:
        self.sampler = sampler

    def after(self, answered: Answered) -> None:
        scored = answered.scored
        groups: dict[str, tuple[Any, list[str], list[float], list[float]]] = {}
        for i, x in enumerate(answered.call.inputs):
            pair = x.split() if isinstance(x, WholeText) else x  # the split a client gave, if any
            if pair is None:
                continue
            prompt, completion = pair
            group = groups.setdefault(json.dumps(prompt, sort_keys=True), (prompt, [], [], []))
            group[1].append(completion)
            group[2].append(scored.raw_scores[i])
            if scored.disagreement is not None:
                group[3].append(scored.disagreement[i])
        for prompt, completions, scores, disagreement in groups.values():
            if len(completions) > 1:
                self.sampler.offer(prompt, completions, scores, disagreement or None)

    async def close(self) -> None:
        return None

