"""The one settings object: environment parsing, coherence rules, and the docs' reference table of it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import BEGIN, END, REFERENCE, ServiceSettings, reference_table


def test_environment_fills_settings_and_keys_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDSERVE_API_KEYS", " a , b,")
    monkeypatch.setenv("REWARDSERVE_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("REWARDSERVE_VARIANT", "int8")
    s = ServiceSettings(variant="fp32")  # explicit values (flags) win over the environment
    assert s.api_keys == ("a", "b") and s.max_wait_ms == 2.5 and s.variant == "fp32"
    assert "'a'" not in repr(s)
    with pytest.raises(ValidationError):
        s.port = 1  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("bad", [
    {"backend": "onnx", "variant": "bf16"}, {"backend": "torch", "variant": "int8"},
    {"max_item_tokens": 9000, "max_batch_tokens": 8192}, {"max_queue_items": 10, "max_items_per_request": 11},
    {"max_wait_ms": -1}, {"device": "tpu"},
])
def test_incoherent_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(**bad)  # type: ignore[arg-type]


def test_the_docs_reference_is_generated_from_the_settings() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert f"{BEGIN}\n{reference_table()}\n{END}" in text, "run: python3 -m service.settings"
    for name, info in ServiceSettings.model_fields.items():
        assert f"`REWARDSERVE_{name.upper()}`" in text and str(info.description) in text, name
