"""Export → load → parity, for an encoder and decoders on both padding sides; the gate; the card; eval."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from export.errors import ParityError
from export.parity import THRESHOLDS, Thresholds
from export.run import ExportSettings, export_bundle
from rewardmodel import BundleError, Formatter, load_tokenizer, pad_batch, read_card
from rewardmodel.card import sha256_file
from rewardmodel.onnx_model import onnx_scorer
from rewardmodel.scoring import score_examples
from rewardmodel.sources import load_examples
from rewardmodel.torch_model import load_torch_model, torch_scorer
from rewardmodel.variants import ONNX_VARIANTS
from rewardserve.evaluate import evaluate_bundle

ITEMS = [("how are you ?", " it is good ."), ("a ?", " one"), ("the cat is red ?", " it is a bad three four .")]


@pytest.fixture
def bundle_copy(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(request.getfixturevalue(request.param), target)
    return target


def _settings(data: tuple[Path, Path], **kw: Any) -> ExportSettings:
    return ExportSettings(**{"variants": ("fp32", "int8"), "calibration_data": str(data[1]), "samples": 64, **kw})


@pytest.mark.parametrize(
    "bundle_copy", ["trained_bert_bundle", "trained_llama_bundle", "trained_qwen_bundle"], indirect=True
)
def test_export_parity_on_both_padding_sides(bundle_copy: Path, good_bad_files: tuple[Path, Path]) -> None:
    card = export_bundle(bundle_copy, _settings(good_bad_files, variants=("fp32", "fp16", "int8")))
    fp32 = card.onnx["fp32"]
    assert fp32["parity_passed"] and fp32["parity"]["max_abs_diff"] <= 1e-4 and fp32["parity"]["pairs"] == 64
    assert card.onnx["int8"]["parity"]["pair_agreement"] >= 0.98
    # decoders take the generic fp16 conversion (fp32 norms/softmax/reductions), encoders the optimizer's
    assert card.onnx["fp16"]["parity_passed"] and card.onnx["fp16"]["parity"]["max_abs_diff"] <= 5e-2
    generic = card.formatting.score_position == "last"
    assert card.onnx["fp16"]["conversion"].startswith("generic" if generic else "onnxruntime transformer optimizer")

    # the exported graph scores any batch shape and either padding side like torch does
    model, _ = load_torch_model(bundle_copy)
    session = ort.InferenceSession(str(bundle_copy / ONNX_VARIANTS["fp32"].file), providers=["CPUExecutionProvider"])
    formatter = Formatter(load_tokenizer(bundle_copy), card.formatting)
    encoded = formatter.encode_many(ITEMS)
    sides = ("left", "right") if card.formatting.score_position == "last" else ("right",)  # encoders: right only
    for side in sides:
        batch = pad_batch(encoded, replace(card.formatting, padding_side=side))  # type: ignore[arg-type]
        np.testing.assert_allclose(onnx_scorer(session)(batch)[:, 0], torch_scorer(model)(batch)[:, 0], atol=1e-4)
    single = pad_batch(encoded[:1], card.formatting)
    np.testing.assert_allclose(onnx_scorer(session)(single), torch_scorer(model)(single), atol=1e-4)

    # fp16 and int8 against torch, measured here rather than read from the gate's own figures: the
    # held-out pairs scored by each session and by the checkpoint, compared score by score and pair by pair
    examples = load_examples(str(good_bad_files[1]))[:64]
    reference, _, _ = score_examples(torch_scorer(model), formatter, examples)
    ref = np.array(reference)
    for variant, max_diff, agreement in (("fp16", 5e-2, 0.99), ("int8", None, 0.95)):
        variant_session = ort.InferenceSession(str(bundle_copy / ONNX_VARIANTS[variant].file),
                                               providers=["CPUExecutionProvider"])
        got = np.array(score_examples(onnx_scorer(variant_session), formatter, examples)[0])
        if max_diff is not None:
            assert np.abs(got - ref).max() <= max_diff, (variant, np.abs(got - ref).max())
        assert np.abs(got - ref).mean() <= 0.1 * ref.std(), variant  # close on the model's own scale
        assert np.mean((got[:, 0] > got[:, 1]) == (ref[:, 0] > ref[:, 1])) >= agreement, variant


@pytest.mark.parametrize("bundle_copy", ["trained_bert_bundle"], indirect=True)
def test_card_records_each_variant(bundle_copy: Path, good_bad_files: tuple[Path, Path]) -> None:
    export_bundle(bundle_copy, _settings(good_bad_files, variants=("fp32", "fp16", "int8")))
    card = read_card(bundle_copy)  # verifies every hash, the ONNX files included
    for variant, record in card.onnx.items():
        path = bundle_copy / record["file"]
        assert record["sha256"] == sha256_file(path) == card.files[record["file"]]
        assert record["size_bytes"] == path.stat().st_size and record["opset"] == 17
        assert record["thresholds"] == THRESHOLDS[variant].__dict__
        assert record["calibration"] == {"data": str(good_bad_files[1]), "examples": 64}
    assert card.onnx["fp16"]["dtype"] == "float16" and card.onnx["fp16"]["providers_checked"] == [
        "CPUExecutionProvider"] and "re-run the export on a GPU" in card.onnx["fp16"]["note"]
    assert card.onnx["int8"]["size_bytes"] < card.onnx["fp32"]["size_bytes"] / 2
    (bundle_copy / ONNX_VARIANTS["int8"].file).write_bytes(b"tampered")
    with pytest.raises(BundleError, match=r"model_int8\.onnx does not match"):
        read_card(bundle_copy)


@pytest.mark.parametrize("bundle_copy", ["trained_bert_bundle"], indirect=True)
def test_gate_refuses_a_failing_variant_unless_forced(
    bundle_copy: Path, good_bad_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # int8 cannot reproduce fp32 scores to 1e-9: a threshold it must miss
    monkeypatch.setitem(THRESHOLDS, "int8", Thresholds(max_abs_diff=1e-9, pair_agreement=0.98))
    before = read_card(bundle_copy)
    with pytest.raises(ParityError, match=r"int8 variant failed the parity gate \(max_abs_diff .* > 1e-09\)"):
        export_bundle(bundle_copy, _settings(good_bad_files))
    assert read_card(bundle_copy) == before and not (bundle_copy / "onnx").exists()

    card = export_bundle(bundle_copy, _settings(good_bad_files, force=True))
    assert card.onnx["int8"]["parity_passed"] is False
    assert card.onnx["int8"]["parity_failures"][0].startswith("max_abs_diff")
    assert card.onnx["fp32"]["parity_passed"] is True


@pytest.mark.parametrize("bundle_copy", ["trained_llama_bundle"], indirect=True)
def test_external_data_for_large_models(bundle_copy: Path, good_bad_files: tuple[Path, Path]) -> None:
    card = export_bundle(bundle_copy, _settings(good_bad_files, variants=("fp32",), external_data_threshold=0))
    assert (bundle_copy / "onnx" / "model.onnx.data").is_file()
    assert "onnx/model.onnx.data" in card.files and card.onnx["fp32"]["parity_passed"]
    assert card.onnx["fp32"]["size_bytes"] > (bundle_copy / "onnx" / "model.onnx").stat().st_size


@pytest.mark.parametrize("bundle_copy", ["trained_bert_bundle"], indirect=True)
def test_eval_on_an_exported_variant_matches_the_checkpoint(bundle_copy: Path,
                                                             good_bad_files: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match="no 'fp32' ONNX variant"):
        evaluate_bundle(str(bundle_copy), str(good_bad_files[1]), variant="fp32", progress=False)
    export_bundle(bundle_copy, _settings(good_bad_files))
    torch_report = evaluate_bundle(str(bundle_copy), str(good_bad_files[1]), progress=False)
    fp32 = evaluate_bundle(str(bundle_copy), str(good_bad_files[1]), variant="fp32", progress=False)
    int8 = evaluate_bundle(str(bundle_copy), str(good_bad_files[1]), variant="int8", progress=False)
    assert fp32["accuracy"] == torch_report["accuracy"] >= 0.95
    assert fp32["mean_margin"] == pytest.approx(torch_report["mean_margin"], abs=1e-4)
    assert int8["accuracy"] >= torch_report["accuracy"] - 0.05
    assert set(int8) == set(torch_report)


@pytest.mark.parametrize(
    "bundle_copy", ["trained_bert_bundle", "trained_llama_bundle", "trained_qwen_bundle"], indirect=True
)
def test_the_read_rows_are_what_the_head_reads_in_torch_and_in_every_variant(
        bundle_copy: Path, good_bad_files: tuple[Path, Path]) -> None:
    from export.evaluate import variant_scorers
    from rewardmodel.personal import own_head
    from rewardmodel.torch_model import torch_row_scorer

    card = export_bundle(bundle_copy, _settings(good_bad_files, variants=("fp32", "int8")))
    model, _ = load_torch_model(bundle_copy)
    formatter = Formatter(load_tokenizer(bundle_copy), card.formatting)
    batch = pad_batch(formatter.encode_many(ITEMS), card.formatting)
    scores, rows = torch_row_scorer(model)(batch)
    assert rows.shape == (len(ITEMS), model.config.hidden_size)
    # the model's own head on the rows gives its score: the rows are the vector the reward is read from
    head, bias = own_head(model.reader.weight.detach().numpy(), model.reader.bias.detach().numpy()
                          if model.reader.bias is not None else np.zeros(1))
    np.testing.assert_allclose(rows @ head + bias, scores[:, 0], atol=1e-4)
    for variant in ("fp32", "int8"):
        gate = card.onnx[variant]["rows"]
        assert gate["passed"] and gate["mean_rel_error"] <= gate["threshold"], (variant, gate)
        _, scorer, _ = variant_scorers(bundle_copy / ONNX_VARIANTS[variant].file, variant)
        assert scorer is not None
        got_scores, got_rows = scorer(batch)
        if variant == "fp32":
            np.testing.assert_allclose(got_rows, rows, atol=1e-4)
            np.testing.assert_allclose(got_scores[:, 0], scores[:, 0], atol=1e-4)
    # the scores-only path fetches no rows (the graph's first output alone)
    session = ort.InferenceSession(str(bundle_copy / ONNX_VARIANTS["fp32"].file), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "hidden"]
    assert onnx_scorer(session)(batch).shape == (len(ITEMS), 1)
