"""A fault-injecting wrapper of a real backend, for tests that need a real server to misbehave on cue."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np

from rewardmodel import BundleCard, PaddedBatch, load_tokenizer
from service.backends import Backend, load_backend
from service.settings import ServiceSettings

MARKERS = ("boom", "hang", "nan", "die", "walked")


class Faulty:
    """The real backend, except on rows holding a marker: boom raises, hang blocks until released, nan
    scores NaN, die raises SystemExit (which ends the backend thread). Counts the rows of each marker run."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.seen: Counter[str] = Counter()
        self._real: Backend | None = None
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def load(self, root: Path, card: BundleCard, settings: ServiceSettings) -> Faulty:
        self._real = load_backend(root, card, settings)
        self.info = self._real.info
        self.streams, self.pad_multiple, self.packs = self._real.streams, self._real.pad_multiple, self._real.packs
        tokenizer = load_tokenizer(root)
        ids = {w: tokenizer.token_to_id(w) for w in MARKERS}
        assert None not in ids.values(), ids  # every marker is one token of the vocabulary
        self._ids = {w: int(i) for w, i in ids.items() if i is not None}
        return self

    def score(self, batch: PaddedBatch) -> np.ndarray:
        assert self._real is not None
        nan = self._faults(batch)
        scores = self._real.score(batch)
        scores[nan] = np.nan
        return scores

    @property
    def rows_error(self) -> str | None:
        assert self._real is not None
        return self._real.rows_error

    def score_rows(self, batch: PaddedBatch) -> tuple[np.ndarray, np.ndarray]:
        """The real scores and read rows, with the markers' faults."""
        assert self._real is not None
        nan = self._faults(batch)
        scores, read = self._real.score_rows(batch)
        scores[nan] = np.nan
        return scores, read

    def _faults(self, batch: PaddedBatch) -> np.ndarray:
        """Count the markers, raise or hang as they say; the rows to score NaN."""
        rows = {w: (batch.input_ids == i).any(axis=1) for w, i in self._ids.items()}
        with self._lock:  # several streams may score at once
            for word, where in rows.items():
                self.seen[word] += int(where.sum())
        if rows["hang"].any():
            self.release.wait(30)
        if rows["boom"].any():
            raise RuntimeError("planted backend failure")
        if rows["die"].any():
            raise SystemExit("planted thread death")
        return rows["nan"]

    def health(self) -> None:
        pass

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
