"""Test doubles of the service's backend protocol, in one place: a recorder that scores rows as the sum of their ids
(for the scheduler's batching and failure paths), a backend whose batches take a set time per row (for measured
engine choice and admission by time), and a real backend slowed down per row (a slow CPU behind a real server).
They stand in for a model runtime, never for a user-facing part. The tokenized items the scheduler's tests
feed them are here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rewardmodel import EncodedInput, FormatSpec, PaddedBatch, SpecialToken
from service.backends.base import BackendInfo
from service.errors import BackendFailure

SPEC = FormatSpec(template="pair", max_length=64, score_position="first", padding_side="right",
                  pad_token=SpecialToken("[PAD]", 0))
"""The format the scheduler's doubles are fed with: items already tokenized, padded on the right with id 0."""


def item(*ids: int) -> EncodedInput:
    """One tokenized item of ``ids``."""
    return EncodedInput(list(ids), None, 0, len(ids), False)


def items(length: int, count: int, first: int = 1) -> list[EncodedInput]:
    """``count`` items of ``length`` tokens, told apart by their first id (``first``, ``first + 1``, …)."""
    return [item(first + i, *[1] * (length - 1)) for i in range(count)]


class Recorder:
    """Scores a row as the sum of its token ids; records every batch; can be held to let a queue build up."""

    info = BackendInfo("recorder", "cpu", "float64")

    def __init__(self, fail_on: Callable[[PaddedBatch], bool] | None = None, streams: int = 1,
                 pad_multiple: int = 1, packs: bool = False) -> None:
        self.streams = streams
        self.pad_multiple = pad_multiple
        self.packs = packs
        self.widths: list[int] = []
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        """Set when a call has begun (it may then wait at the gate)."""
        self.fail_on = fail_on

    def score(self, batch: PaddedBatch) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        self.widths.append(batch.input_ids.shape[1])
        self.batches.append([row[mask.astype(bool)].tolist() for row, mask in zip(batch.input_ids,
                                                                                 batch.attention_mask, strict=True)])
        if self.fail_on and self.fail_on(batch):
            raise BackendFailure("boom")
        scores = (batch.input_ids * batch.attention_mask).sum(axis=1).astype(float)
        scores[batch.input_ids[:, 0] == 666] = np.nan
        return scores

    rows_error = None
    row_calls = 0
    """Batches scored with their rows."""

    def score_rows(self, batch: PaddedBatch) -> tuple[np.ndarray, np.ndarray]:
        """The scores, and each row's read row: [its first id, its length]."""
        scores = self.score(batch)
        self.row_calls += 1
        return scores, np.stack([batch.input_ids[:, 0], batch.attention_mask.sum(axis=1)], axis=1).astype(float)

    def health(self) -> None:
        pass

    def close(self) -> None:
        pass


class Timed:
    """Scores a row as the sum of its ids, taking ``row_s`` seconds per row (a slow or fast engine on cue)."""

    pad_multiple = 1
    packs = False

    def __init__(self, row_s: float, name: str = "timed", streams: int = 1) -> None:
        self.row_s = row_s
        self.streams = streams
        self.info = BackendInfo(name, "cpu", "float64")
        self.calls = 0
        self.closed = False

    def score(self, batch: PaddedBatch) -> np.ndarray:
        self.calls += 1
        time.sleep(self.row_s * batch.input_ids.shape[0])
        return (batch.input_ids * batch.attention_mask).sum(axis=1).astype(float)

    rows_error = "a timed double returns no read rows"

    def score_rows(self, batch: PaddedBatch) -> tuple[np.ndarray, np.ndarray]:
        raise BackendFailure(self.rows_error)

    def health(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Throttled:
    """A real backend made slower by ``row_s`` seconds per row: the slow CPU of the overload probe, on cue."""

    def __init__(self, inner: Any, row_s: float) -> None:
        self.inner = inner
        self.row_s = row_s
        self.streams = inner.streams
        self.pad_multiple = inner.pad_multiple
        self.packs = inner.packs
        self.info = inner.info

    def score(self, batch: PaddedBatch) -> np.ndarray:
        time.sleep(self.row_s * batch.input_ids.shape[0])
        return self.inner.score(batch)  # type: ignore[no-any-return]

    @property
    def rows_error(self) -> str | None:
        return self.inner.rows_error  # type: ignore[no-any-return]

    def score_rows(self, batch: PaddedBatch) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.row_s * batch.input_ids.shape[0])
        return self.inner.score_rows(batch)  # type: ignore[no-any-return]

    def health(self) -> None:
        self.inner.health()

    def close(self) -> None:
        self.inner.close()
