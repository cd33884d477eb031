"""Versions, swaps, reloads and splits on a backend double, in milliseconds: a released version waits for the
requests admitted to it and admits no new one; a swap under traffic answers every request on exactly one version;
a models-file reload adds, swaps and removes entries and switches splits; a split picks by weight, sticky by its
header. The double replaces only the model runtime; cards, tokenizers, engines and schedulers are real."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rewardmodel import BundleCard
from service.deployment import Version
from service.engine import ScoreCall
from service.errors import NotReady
from service.metrics import Metrics
from service.models_file import BundleEntry, SplitEntry
from service.registry import Registry, pick
from service.settings import ServiceSettings
from tests.doubles import Timed

ITEM = ("how are you ?", " good .")


def _settings(**kw: Any) -> ServiceSettings:
    return ServiceSettings(backend="onnx", variant="fp32", warmup=False, **kw)


class Loads:
    """Hands out :class:`Timed` doubles (``row_s`` seconds per item) and keeps them."""

    def __init__(self, row_s: float = 0.0) -> None:
        self.row_s = row_s
        self.backends: list[Timed] = []

    def __call__(self, root: Path, card: BundleCard, settings: ServiceSettings) -> Timed:
        self.backends.append(Timed(self.row_s, name=root.name))
        return self.backends[-1]


@pytest.fixture()
def bundles(bert_onnx_bundle: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Three copies of one bundle, in directories of their own (a version is its files, so each is the same
    version: what differs here is which entry serves it)."""
    out = []
    for name in ("a", "b", "c"):
        shutil.copytree(bert_onnx_bundle, tmp_path / name)
        out.append(tmp_path / name)
    return out[0], out[1], out[2]


def test_a_released_version_waits_for_its_admitted_requests_and_admits_none_after(
        bundles: tuple[Path, Path, Path]) -> None:
    async def go() -> None:
        registry = Registry([BundleEntry(name="rm", path=bundles[0])], _settings(), Metrics(), Loads())
        await registry.start()
        version = registry.targets["rm"]
        assert isinstance(version, Version)
        answered = asyncio.Event()
        with version.admit():
            release = asyncio.ensure_future(version.release(timeout_s=30))
            while not version.released:  # the release has begun: it marks the version released, then waits
                await asyncio.sleep(0)
            with pytest.raises(NotReady):
                with version.admit():
                    pass
            scored = await version.score(ScoreCall([ITEM], False))  # the admitted request is still answered
            assert not release.done()
            answered.set()
        assert await asyncio.wait_for(release, 5) == 1 and scored.scores
        assert version.backend is not None and version.backend.closed  # type: ignore[attr-defined]

    asyncio.run(go())


def test_a_swap_under_traffic_answers_every_request_on_exactly_one_version(
        bundles: tuple[Path, Path, Path]) -> None:
    loads = Loads(row_s=0.002)

    async def go() -> None:
        registry = Registry([BundleEntry(name="rm", path=bundles[0])], _settings(), Metrics(), loads)
        await registry.start()
        served: Counter[str] = Counter()
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                target = registry.resolve("rm", {}).target
                try:
                    with target.admit():
                        await target.score(ScoreCall([ITEM], False))
                except NotReady:  # resolved just before the switch and admitted after its release began
                    served["retried"] += 1
                    continue
                served[target.root.name if isinstance(target, Version) else "?"] += 1

        clients = [asyncio.ensure_future(client()) for _ in range(8)]
        while served["a"] < 8:  # the old version answers under traffic before the swap …
            await asyncio.sleep(0)
        answer = await registry.swap("rm", bundles[1])
        while served["b"] < 8:  # … and the new one after it
            await asyncio.sleep(0)
        stop.set()
        await asyncio.gather(*clients)
        assert served["a"] > 0 and served["b"] > 0 and set(served) <= {"a", "b", "retried"}
        assert answer["previous"]["released"] and loads.backends[0].closed and not loads.backends[1].closed
        await registry.close()

    asyncio.run(go())


def test_a_reload_adds_swaps_and_removes_entries_and_switches_splits(bundles: tuple[Path, Path, Path]) -> None:
    loads = Loads()
    a, b, c = bundles

    async def go() -> None:
        registry = Registry([BundleEntry(name="rm", path=a), BundleEntry(name="old", path=b),
                             SplitEntry(name="ab", split={"rm": 1.0, "old": 0.0})], _settings(), Metrics(), loads)
        await registry.start()
        assert registry.resolve("ab", {}).target is registry.targets["rm"]
        changes = await registry.reload([BundleEntry(name="rm", path=c), BundleEntry(name="new", path=b),
                                         SplitEntry(name="ab", split={"rm": 0.0, "new": 1.0})])
        assert {ch["model"] for ch in changes} == {"rm", "new", "ab", "old"}
        assert {"model": "old", "removed": True} in changes
        assert set(registry.targets) == {"rm", "new"}
        assert registry.resolve("ab", {}).target is registry.targets["new"]
        # the first two doubles (rm on a, old on b) were released; rm on c and new on b serve
        assert [d.closed for d in loads.backends] == [True, True, False, False]
        with pytest.raises(Exception, match="default"):
            await registry.reload([BundleEntry(name="new", path=b)])  # the default must stay first
        await registry.close()

    asyncio.run(go())


def test_a_split_picks_by_weight_and_sticks_to_its_header(bundles: tuple[Path, Path, Path]) -> None:
    weights = {"x": 3.0, "y": 1.0, "z": 0.0}
    picks = Counter(pick(weights, f"session-{i}") for i in range(4000))
    assert picks["z"] == 0 and 0.70 < picks["x"] / 4000 < 0.80
    assert {pick(weights, "session-7") for _ in range(20)} == {pick(weights, "session-7")}

    async def go() -> None:
        registry = Registry([BundleEntry(name="rm", path=bundles[0]), BundleEntry(name="alt", path=bundles[1]),
                             SplitEntry(name="ab", split={"rm": 0.5, "alt": 0.5}, sticky_header="x-user")],
                            _settings(), Metrics(), Loads())
        await registry.start()
        for user in ("u1", "u2", "u3"):
            first = registry.resolve("ab", {"x-user": user}).target
            assert all(registry.resolve("ab", {"x-user": user}).target is first for _ in range(10))
        chosen = {registry.resolve("ab", {"x-user": f"u{i}"}).target.name for i in range(50)}
        assert chosen == {"rm", "alt"}
        await registry.close()

    asyncio.run(go())
