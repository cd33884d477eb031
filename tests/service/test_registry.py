"""The registry on its own, with a backend double for the model runtime: the thread budget each loaded model gets,
the hot-swap memory check (the files the engine loads), a failed load leaving the old version serving, and the
version each swap serves. The double replaces only the runtime; cards, tokenizers and the scheduler are real."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from rewardmodel import BundleCard, read_card
from service.engine import ScoreCall
from service.engines import BACKENDS
from service.errors import InsufficientMemory, SwapFailed
from service.machine import cpu_count
from service.metrics import Metrics
from service.models_file import BundleEntry, EnsembleEntry, Entry, SplitEntry
from service.registry import MEMORY_OVERHEAD, Registry, thread_budget, weights_bytes
from service.settings import ServiceSettings
from tests.doubles import Timed

ITEM = ("how are you ?", " good .")


class Loads:
    """A backend loader that hands out :class:`Timed` doubles and records what each load was given."""

    def __init__(self, fail_on: Path | None = None) -> None:
        self.calls: list[tuple[Path, ServiceSettings]] = []
        self.fail_on = fail_on
        self.backends: list[Timed] = []

    def __call__(self, root: Path, card: BundleCard, settings: ServiceSettings) -> Timed:
        self.calls.append((root, settings))
        if root == self.fail_on:
            raise RuntimeError("the runtime refused the model")  # a foreign error, as a real runtime raises
        self.backends.append(Timed(0.0, name=f"double-{len(self.backends)}"))
        return self.backends[-1]


def settings(**kw: Any) -> ServiceSettings:
    return ServiceSettings(backend="onnx", variant="fp32", warmup=False, **kw)


def test_the_thread_budget_splits_the_cores_between_the_models_on_the_cpu(tmp_path: Path) -> None:
    one = [BundleEntry(name="a", path=tmp_path)]
    assert thread_budget(one, settings()) == 0  # one model: the runtime takes every core
    three: list[Entry] = [BundleEntry(name="a", path=tmp_path), EnsembleEntry(name="e", members=(tmp_path, tmp_path)),
             BundleEntry(name="g", path=tmp_path, device="cuda"), SplitEntry(name="s", split={"a": 1.0})]
    assert thread_budget(three, settings()) == max(1, cpu_count() // 3)  # a, and the ensemble's two members
    assert thread_budget(three, settings(threads=5)) == 5  # asked for: kept


def test_the_memory_estimate_counts_the_variant_the_backend_loads(bert_onnx_bundle: Path) -> None:
    card = read_card(bert_onnx_bundle)
    for engine in BACKENDS.values():
        for variant in engine.variants:
            if engine.available(card, variant) is None:
                files = engine.weight_files(bert_onnx_bundle, card, variant)
                assert files and all(f.is_file() for f in files)
                s = ServiceSettings(backend=engine.name, variant=variant)
                assert weights_bytes(bert_onnx_bundle, card, s) == sum(f.stat().st_size for f in files)


def test_swaps_serve_the_new_version_refuse_what_will_not_fit_and_keep_the_old_on_failure(
        bert_onnx_bundle: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    shutil.copytree(bert_onnx_bundle, second)
    broken = tmp_path / "broken"
    shutil.copytree(bert_onnx_bundle, broken)
    load = Loads(fail_on=broken)
    card = read_card(bert_onnx_bundle)
    need = MEMORY_OVERHEAD * weights_bytes(bert_onnx_bundle, card, settings())

    async def go() -> None:
        entries = [BundleEntry(name="rm", path=bert_onnx_bundle), BundleEntry(name="other", path=second)]
        registry = Registry(entries, settings(swap_memory_bytes=int(need) + 1), Metrics(), load)
        await registry.start()
        assert [s.threads for _, s in load.calls] == [max(1, cpu_count() // 2)] * 2  # two models share the cores
        first = registry.targets["rm"]
        assert (await first.score(ScoreCall([ITEM], False))).scores == [pytest.approx(_sum(first))]
        # a failed load: the old version keeps serving
        with pytest.raises(SwapFailed, match="refused the model"):
            await registry.swap("rm", broken)
        assert registry.targets["rm"] is first
        # a swap that would not fit beside the serving version: 507 before anything loads
        calls = len(load.calls)
        tight = Registry(entries[:1], settings(swap_memory_bytes=int(need) - 1), Metrics(), load)
        await tight.start()
        with pytest.raises(InsufficientMemory) as info:
            await tight.swap("rm", second)
        assert info.value.status == 507 and len(load.calls) == calls + 1  # only tight's own start loaded
        await tight.close()
        # a swap that fits: the new version serves, the old one's backend is closed once it is released
        answer = await registry.swap("rm", second)
        assert answer["previous"]["released"] and registry.targets["rm"] is not first
        assert load.backends[0].closed and not load.backends[-1].closed
        await registry.close()

    asyncio.run(go())


def _sum(version: Any) -> float:
    """What the double scores the item as: the sum of its token ids."""
    return float(sum(version.formatter.encode(*ITEM).input_ids))
