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
    HeadSpec,
    Normalization,
    SpecialToken,
    VerifiedFiles,
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
    with pytest.raises(BundleError, match=r"`rewardserve import .*`rewardserve train --model"):
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


V1_DECODER = {
    "format_version": 1, "name": "old", "base_model": "tiny-llama", "architecture": "decoder", "model_type": "llama",
    "formatting": {"template": "concat", "max_length": 64, "score_position": "last", "padding_side": "left",
                   "pad_token": {"token": "<pad>", "id": 9}, "eos_token": {"token": "</s>", "id": 2},
                   "bos_token": {"token": "<s>", "id": 1}, "append_eos": True, "use_token_type_ids": False,
                   "chat_template": None, "truncation": "prompt_left", "special_tokens": {"eos_token": "</s>"}},
    "normalization": None, "training": {}, "onnx": {}, "files": {"model.safetensors": "0" * 64}, "criteria": None,
}
"""A card written by rewardserve before format version 2 (a trained concat decoder)."""


def test_a_version_1_card_reads_as_the_same_spec() -> None:
    """Version 1 appended EOS by a flag and always added the tokenizer's specials to concat text; the model read its
    own position. Version 2 says each of these explicitly, and writes itself as version 2."""
    card = BundleCard.from_dict(json.loads(json.dumps(V1_DECODER)))
    spec = card.formatting
    assert (spec.suffix_ids, spec.bos, spec.read, spec.tokenize) == ((2,), "tokenizer", "model", "split")
    assert card.head == HeadSpec() and card.source == {} and card.layout.width == 1
    again = BundleCard.from_dict(card.to_dict())
    assert again == card and card.to_dict()["format_version"] == 2
    assert card.to_dict()["formatting"]["format_record"] == 2 and "append_eos" not in card.to_dict()["formatting"]


def test_verified_files_are_hashed_once_and_a_changed_file_again(bundle: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A large bundle must not be hashed on every start; a file changed since, even to the same size and mtime,
    is hashed again (its ctime moved) and refused."""
    import os

    import rewardmodel.card as card_module

    hashed: list[str] = []
    real = card_module.sha256_file

    def counted(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(card_module, "sha256_file", counted)
    verified = VerifiedFiles(tmp_path / "verified")
    read_card(bundle, verified=verified)
    assert sorted(hashed) == ["model.safetensors", "tokenizer.json"]
    hashed.clear()
    read_card(bundle, verified=verified)
    read_card(bundle, verified=VerifiedFiles(tmp_path / "verified"))  # remembered on disk, not in the object
    assert hashed == []
    weights = bundle / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"WEIGHTS")  # same size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    with pytest.raises(BundleError, match="does not match its sha256"):
        read_card(bundle, verified=verified)
    assert hashed == ["model.safetensors"]
