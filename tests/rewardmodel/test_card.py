"""The bundle card: round trip, and refusals that say what to do."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rewardmodel import (
    CARD_NAME,
    BundleCard,
    BundleError,
    FormatSpec,
    Normalization,
    SpecialToken,
    read_card,
    write_card,
)


def _card() -> BundleCard:
    spec = FormatSpec(template="pair", max_length=64, score_position="first", padding_side="right",
                      pad_token=SpecialToken("[PAD]", 0), use_token_type_ids=True)
    return BundleCard(name="t", base_model="base", architecture="encoder", model_type="bert", formatting=spec,
                      normalization=Normalization(0.5, 2.0, "held-out", 10), training={"steps": 3})


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "tokenizer.json").write_text("{}")
    write_card(tmp_path, _card())
    return tmp_path


def test_round_trip_records_hashes(bundle: Path) -> None:
    card = read_card(bundle)
    assert card == BundleCard(**{**_card().__dict__, "files": card.files})
    assert set(card.files) == {"model.safetensors", "tokenizer.json"}
    assert card.files["model.safetensors"] == hashlib.sha256(b"weights").hexdigest()


def test_missing_card_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="rewardserve train"):
        read_card(tmp_path)


def test_tampered_file_is_refused(bundle: Path) -> None:
    (bundle / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(BundleError, match="does not match its sha256"):
        read_card(bundle)
    read_card(bundle, verify=False)  # an operator can still inspect it


def test_missing_file_is_refused(bundle: Path) -> None:
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        read_card(bundle)


def test_unknown_version_is_refused(bundle: Path) -> None:
    data = json.loads((bundle / CARD_NAME).read_text())
    data["format_version"] = 99
    (bundle / CARD_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format_version 99"):
        read_card(bundle)


def test_pickle_weights_are_refused(bundle: Path) -> None:
    (bundle / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(BundleError, match="safetensors only"):
        read_card(bundle)


def test_malformed_json_is_refused(bundle: Path) -> None:
    (bundle / CARD_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_card(bundle)


def test_write_requires_safetensors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="safetensors"):
        write_card(tmp_path, _card())


def test_normalization_must_be_usable() -> None:
    with pytest.raises(BundleError, match="positive std"):
        Normalization(0.0, 0.0)
