"""A TRL reward function backed by a rewardserve server: pass it in ``GRPOTrainer(reward_funcs=[...])``.

TRL calls a reward function with ``prompts`` and ``completions`` (plain strings, or for conversational
datasets lists of chat messages) plus the dataset's other columns as keyword arguments, and expects one
float per completion. This adapter turns each pair into a ``/score`` item — a conversation becomes
``{"messages": prompt + completion}``, so the bundle's own chat formatting applies — and scores them
through :class:`~rewardserve.client.RewardClient` (chunking, retries, connection reuse)::

    from rewardserve.trl import RemoteReward
    trainer = GRPOTrainer(model=policy, reward_funcs=[RemoteReward("http://rewardserve:8000")], ...)

TRL names the logged metric after ``__name__`` (``rewards/rewardserve/mean``); pass ``name`` to change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardserve.client import Item, RewardClient


def score_item(prompt: Any, completion: Any) -> Item:
    """The ``/score`` item for one TRL (prompt, completion), plain or conversational."""
    if isinstance(completion, list):  # conversational: a list of (assistant) messages
        messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return {"messages": [*messages, *completion]}
    if isinstance(prompt, list):
        return {"prompt": prompt, "completion": completion}
    return (prompt, completion)


class RemoteReward:
    """Callable TRL reward function; one HTTP client (and connection pool) for the trainer's lifetime."""

    def __init__(self, base_url: str, api_key: str | None = None, normalize: bool | None = None,
                 name: str = "rewardserve", client: RewardClient | None = None, **client_options: Any) -> None:
        self.__name__ = name
        self.normalize = normalize
        self.client = client or RewardClient(base_url, api_key=api_key, **client_options)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        """One reward per completion; ``columns`` (extra dataset fields, trainer state) are not needed."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        return self.client.score([score_item(p, c) for p, c in zip(prompts, completions, strict=True)],
                                 self.normalize)
