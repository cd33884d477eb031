"""The engine on its own (service/engine.py): limits, dedup, normalization and timings, over a real bundle's
formatter and the scheduler with the recording backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rewardmodel import EncodedInput, Formatter, Normalization, load_tokenizer, read_card
from service.batching import BatchLimits
from service.engine import Engine, RequestLimits, ScoreCall, WholeText, _dedupe
from service.errors import InvalidRequest, PayloadTooLarge
from service.scheduler import Scheduler
from tests.doubles import Recorder


def test_dedupe_keeps_first_copies_and_maps_every_input() -> None:
    def enc(*ids: int, types: list[int] | None = None) -> EncodedInput:
        return EncodedInput(list(ids), types, 0, len(ids), False)

    inputs = [enc(1, 2), enc(3), enc(1, 2), enc(1, 2, types=[0, 1]), enc(3)]
    unique, index = _dedupe(inputs)
    assert [u.input_ids for u in unique] == [[1, 2], [3], [1, 2]]  # token types make a different input
    assert index.tolist() == [0, 1, 0, 2, 1]


def _engine(bundle: Path, **limits: float) -> Engine:
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    scheduler = Scheduler(Recorder(), card.formatting, BatchLimits(4096, 64, 1024))
    scheduler.start()
    request = RequestLimits(**{"max_items": 4, "max_tokens": 200, "timeout_s": 30, **limits})  # type: ignore[arg-type]
    return Engine(formatter, scheduler, request, Normalization(mean=10.0, std=2.0), tokenizer_threads=1)


def test_limits_dedup_normalization_and_timings(bert_onnx_bundle: Path) -> None:
    async def go() -> None:
        engine = _engine(bert_onnx_bundle)
        pair = ("how are you ?", " i am good .")
        scored = await engine.score(ScoreCall([pair, ("how are you ?", " i am bad ."), pair], False))
        assert scored.scores[0] == scored.scores[2] and scored.scores == scored.raw_scores
        assert engine.scheduler.in_system == 0
        recorder = engine.scheduler._backend
        assert isinstance(recorder, Recorder) and sum(len(b) for b in recorder.batches) == 2  # the copy ran once
        assert scored.timings.tokenize_s > 0 and scored.timings.inference_s > 0 and scored.timings.queue_s >= 0
        assert set(scored.timings.headers()) == {"x-tokenization-time-ms", "x-queue-time-ms", "x-inference-time-ms"}

        normalized = await engine.score(ScoreCall([pair], True))
        assert normalized.scores[0] == pytest.approx((normalized.raw_scores[0] - 10.0) / 2.0)
        whole = await engine.score(ScoreCall([WholeText("how are you ? i am good .")], False))
        assert np.isfinite(whole.scores[0]) and whole.input_tokens > 0

        with pytest.raises(InvalidRequest, match="'completions' is empty"):
            await engine.score(ScoreCall([], False, "completions"))
        with pytest.raises(PayloadTooLarge, match="5 documents in one request; the limit is 4") as too_many:
            await engine.score(ScoreCall([pair] * 5, False, "documents"))
        assert too_many.value.kind == "too_many_items"
        with pytest.raises(PayloadTooLarge, match="limit is 200") as too_long:
            await engine.score(ScoreCall([("how are you ?", " good" * 150)] * 4, False))  # 4 x 64 (the card's cap)
        assert too_long.value.kind == "too_many_tokens"
        await engine.scheduler.close()
        engine.close()

    asyncio.run(go())


def test_normalize_without_the_cards_figures_is_refused(bert_onnx_bundle: Path) -> None:
    async def go() -> None:
        card = read_card(bert_onnx_bundle)
        scheduler = Scheduler(Recorder(), card.formatting, BatchLimits(4096, 64, 1024))
        scheduler.start()
        engine = Engine(Formatter(load_tokenizer(bert_onnx_bundle), card.formatting), scheduler,
                        RequestLimits(4, 200, 30), None, tokenizer_threads=1)
        with pytest.raises(InvalidRequest, match="no normalization"):
            await engine.score(ScoreCall([("a", "b")], True))
        assert (await engine.score(ScoreCall([("a", "b")], False))).normalized is False
        await scheduler.close()
        engine.close()

    asyncio.run(go())
