"""``--backend auto``: the fastest engine the bundle has, by measurement; remembered; flags win; and the one table
of backends that settings, models files, the command line and the memory estimate read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardmodel import read_card
from service.autoselect import candidates, choose
from service.deployment import serving_formatter
from service.engines import BACKENDS
from service.errors import BackendFailure, ServiceError
from service.settings import ServiceSettings, setting_fields
from tests.doubles import Timed
from tests.server import running

SPEEDS = {("onnx", "fp32"): 4e-3, ("onnx", "int8"): 2e-3, ("onnx", "int8-static"): 3e-3,
          ("openvino", "fp32"): 4e-3, ("openvino", "int8"): 2.5e-3, ("openvino", "int8-static"): 1e-3,
          ("torch", "fp32"): 6e-3}
"""Seconds per row of each engine's double: OpenVINO's static int8 is the fastest here."""


class Loader:
    """A backend loader of :class:`Timed` doubles at :data:`SPEEDS`, counting loads; ``fail`` names engines whose
    load fails."""

    def __init__(self, fail: tuple[tuple[str, str], ...] = ()) -> None:
        self.loaded: list[tuple[str, str, int]] = []
        self.fail = fail

    def __call__(self, root: Path, card: Any, settings: ServiceSettings) -> Timed:
        self.loaded.append((settings.backend, settings.variant, settings.streams))
        if (settings.backend, settings.variant) in self.fail:
            raise BackendFailure("it would not load")
        return Timed(SPEEDS[settings.backend, settings.variant], settings.backend, settings.streams)


def _choose(bundle: Path, settings: ServiceSettings, load: Loader, cache: Path | None) -> Any:
    card = read_card(bundle)
    settings = settings.model_copy(update={"max_batch_items": 8})
    return choose(bundle, card, settings, serving_formatter(bundle, card, settings), load, cache)


def test_the_fastest_engine_is_chosen_then_remembered(bert_onnx_bundle: Path, tmp_path: Path) -> None:
    load = Loader()
    choice = _choose(bert_onnx_bundle, ServiceSettings(threads=2), load, tmp_path)
    assert (choice.backend, choice.variant, choice.how) == ("openvino", "int8-static", "measured")
    timed = {(r["backend"], r["variant"]): r["items_per_s"] for r in choice.table if "items_per_s" in r}
    assert set(timed) == set(SPEEDS) and max(timed, key=lambda k: timed[k]) == ("openvino", "int8-static")
    assert timed["onnx", "int8"] > timed["onnx", "fp32"]  # the doubles' speeds, measured in that order
    streams = {(b, v): s for b, v, s in load.loaded}
    assert streams["openvino", "int8-static"] == 2 and streams["onnx", "int8"] == 1  # as each serves best
    again = _choose(bert_onnx_bundle, ServiceSettings(threads=2), Loader(), tmp_path)
    assert (again.backend, again.variant, again.how) == ("openvino", "int8-static", "remembered")
    assert again.table == json.loads(json.dumps(choice.table))
    # other threads or batch settings are another measurement
    other = _choose(bert_onnx_bundle, ServiceSettings(threads=1), Loader(), tmp_path)
    assert other.how == "measured"


def test_flags_narrow_the_choice_and_a_failing_engine_is_a_row(bert_onnx_bundle: Path) -> None:
    choice = _choose(bert_onnx_bundle, ServiceSettings(backend="onnx"), Loader(fail=(("onnx", "int8"),)), None)
    assert (choice.backend, choice.variant) == ("onnx", "int8-static")
    rows = {(r["backend"], r["variant"]): r for r in choice.table}
    assert "would not load" in rows["onnx", "int8"]["skipped"] and "openvino" not in {b for b, _ in rows}
    only = _choose(bert_onnx_bundle, ServiceSettings(variant="int8", backend="openvino"), Loader(), None)
    assert (only.backend, only.variant, only.how) == ("openvino", "int8", "only")


def test_what_cannot_serve_is_said(bert_onnx_bundle: Path) -> None:
    card = read_card(bert_onnx_bundle)
    failed = replace(card, onnx={**card.onnx, "int8": {**card.onnx["int8"], "parity_passed": False}})
    found, skipped = candidates(failed, ServiceSettings())
    assert ("onnx", "int8") not in {(c.backend, c.variant) for c in found}
    assert {"backend": "onnx", "variant": "int8", "streams": 1, "skipped": "its int8 variant failed the parity gate"} \
        in skipped
    with pytest.raises(ServiceError, match=r"no engine can serve .*onnx int8: no int8 ONNX variant \(rewardserve "):
        choose(bert_onnx_bundle, replace(card, onnx={}), ServiceSettings(variant="int8"),
               serving_formatter(bert_onnx_bundle, card, ServiceSettings()), Loader(), None)


def test_one_table_names_the_backends() -> None:
    """Settings, models files and the command line offer exactly the table's backends and variants."""
    from service.models_file import BundleEntry

    fields = {name: choices for name, _, _, choices in setting_fields()}
    assert fields["backend"] == ("auto", *BACKENDS)
    assert set(fields["variant"] or ()) == {"auto", *(v for e in BACKENDS.values() for v in e.variants)}
    with pytest.raises(ValueError, match="backend must be one of auto, onnx, openvino, torch, got 'tensorflow'"):
        ServiceSettings(backend="tensorflow")
    with pytest.raises(ValueError, match="variant must be one of"):
        BundleEntry(name="x", path=Path("x"), variant="int4")


def test_the_memory_estimate_counts_the_files_the_backend_loads(bert_onnx_bundle: Path) -> None:
    """OpenVINO loads an ONNX variant: a hot swap to it needs the variant's bytes, not the checkpoint's (which a
    guess by backend once counted, ~4 x the int8-static file)."""
    from service.registry import weights_bytes

    card = read_card(bert_onnx_bundle)
    size = {v: (bert_onnx_bundle / card.onnx[v]["file"]).stat().st_size for v in card.onnx}
    weights = sum(p.stat().st_size for p in bert_onnx_bundle.glob("*.safetensors"))
    assert weights_bytes(bert_onnx_bundle, card, ServiceSettings(backend="openvino", variant="int8-static")) == \
        size["int8-static"] < weights
    assert weights_bytes(bert_onnx_bundle, card, ServiceSettings(backend="torch", variant="fp32")) == weights
    assert weights_bytes(bert_onnx_bundle, card, ServiceSettings()) == max(weights, *size.values())


def test_a_real_server_times_the_bundles_engines_and_says_which_serves(bert_onnx_bundle: Path,
                                                                        tmp_path: Path) -> None:
    from tests.server import scrape

    with running(model=(f"rm={bert_onnx_bundle}",), home=tmp_path, threads=2, backend="auto",
                 variant="auto") as live:
        about = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]
        engine = about["engine"]
        assert engine["chosen"] == "measured"
        timed = {(r["backend"], r["variant"]): r["items_per_s"] for r in engine["table"] if "items_per_s" in r}
        assert ("torch", "fp32") in timed and ("openvino", "int8-static") in timed and len(timed) >= 6
        assert timed[about["backend"], about["variant"]] == max(timed.values())
        assert scrape(live.url, "rewardserve_engine_info", backend=about["backend"], variant=about["variant"],
                      chosen="measured") == 1
        assert httpx.post(live.url + "/score", json={"items": [{"prompt": "q ?", "completion": "good ."}]}
                          ).status_code == 200
    with running(model=(f"rm={bert_onnx_bundle}",), home=tmp_path, threads=2, backend="auto",
                 variant="auto") as live:
        again = httpx.get(live.url + "/v1/models").json()["data"][0]["rewardserve"]
        assert again["engine"]["chosen"] == "remembered"
        assert (again["backend"], again["variant"]) == (about["backend"], about["variant"])
