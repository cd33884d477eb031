"""``rewardserve import``: every family is recognised and its spec proven; what cannot be proven, or imported at
all, is refused with one line saying what to do, and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rewardmodel import BundleError, Formatter, load_tokenizer, read_card
from rewardmodel.families import ImportOptions
from rewardmodel.importer import (
    PROBES,
    ImportRefused,
    check_files,
    ensure_bundle,
    import_model,
    open_checkpoint,
    prove,
    resolve_source,
)
from rewardmodel.scoring import outputs_encoded
from rewardmodel.torch_model import load_torch_model, torch_scorer
from tests.families import BUILDERS, SMALL, bpe, fast, save

EXTRA = [([{"role": "user", "content": "how are you ?"}], "i am good .\n\nit is fine ."),
         ([{"role": "user", "content": "the sun ?"}], "one two three")]
"""Conversations beyond the import's probes, that every family's template accepts."""


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_family_is_proven_and_scores_as_its_reference(name: str, zoo: Any) -> None:
    built = zoo[name]
    bundle = zoo.bundle(name)
    card = read_card(bundle)
    assert card.source["family"] == built.family
    proof = card.source["proof"]
    assert proof["probes"] >= 5 and proof["max_abs_diff"] < 1e-5, proof
    assert card.head.trust_remote_code == built.remote
    # the bundle scores, offline and in one padded batch, what the family's own usage scores one by one
    model, _ = load_torch_model(bundle, trust_remote_code=built.remote)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    items = [(p.messages, p.completion) for p in PROBES if p.messages[0]["role"] != "system"] + EXTRA
    encoded = formatter.encode_many([(m if built.chat else m[-1]["content"], c) for m, c in items])
    got = outputs_encoded(torch_scorer(model), card.formatting, encoded, width=card.layout.width)
    if built.normalized:  # OpenRLHF's normalize_reward: the card's normalization is OpenRLHF's mean and std
        assert card.normalization is not None
        got = (got - card.normalization.mean) / card.normalization.std
    np.testing.assert_allclose(got, built.references(items), atol=1e-5)


def test_exactly_one_bos_reaches_a_llama3_model(zoo: Any, tmp_path: Path) -> None:
    """Its template writes a BOS and its tokenizer adds one: the spec keeps one, and reintroducing the second (the
    'both' policy, as vLLM's text prompts do) is refused by the proof, naming where the ids part."""
    card = read_card(zoo.bundle("llama3"))
    bos = card.formatting.bos_token
    assert bos is not None and card.formatting.bos == "tokenizer"
    ids = Formatter(load_tokenizer(zoo.bundle("llama3")), card.formatting).encode(*EXTRA[0]).input_ids
    assert ids[0] == bos.id and ids.count(bos.id) == 1
    with pytest.raises(ImportRefused, match=r"token ids differ at position 1.*\[\d+, \d+, \d+"):
        import_model(str(zoo["llama3"].path), tmp_path / "double", ImportOptions(bos="both"))
    assert not (tmp_path / "double").exists() and not list(tmp_path.iterdir())


def test_reading_openrlhf_at_the_last_non_pad_token_is_refused(zoo: Any) -> None:
    """OpenRLHF reads its value at the last mask position, the EOS its recipe appends. Loaded as a Llama classifier
    with pad = EOS (what vLLM, TEI and SGLang would do), the score is read one token early; the proof catches a
    spec that does the same."""
    built = zoo["openrlhf-score"]
    family, ckpt = open_checkpoint(built.path, check_files(built.path), ImportOptions(), "cpu")
    derived = family.derive(ckpt, ImportOptions())
    eos = derived.formatting.eos_token
    assert derived.formatting.read == "last_mask" and eos is not None
    wrong = replace(derived, formatting=replace(derived.formatting, read="last_non_pad", pad_token=eos))
    with pytest.raises(ImportRefused, match=r"scores differ by .* with the same token ids"):
        prove(family, ckpt, wrong)
    # and the peers' way: transformers' Llama classifier over the same weights and ids reads another token
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(built.path, num_labels=1, pad_token_id=eos.id)
    classifier = LlamaForSequenceClassification(config).eval()
    classifier.model.load_state_dict(ckpt.model.model.state_dict())
    classifier.score.weight.data.copy_(ckpt.model.score.weight.data)
    ids, right = family.reference(ckpt, derived, PROBES[0])
    with torch.no_grad():
        misread = float(classifier(input_ids=torch.tensor([ids])).logits[0, 0])
    assert abs(misread - float(right[0])) > 1e-3


def test_a_model_whose_own_code_does_something_else_is_refused(zoo: Any, tmp_path: Path) -> None:
    """A gated model whose forward doubles its score: its modules look like ArmoRM's, its scores do not. The proof
    refuses it (exit 1 from the command line) and nothing is written."""
    from rewardserve.cli import main

    source = tmp_path / "odd"
    shutil.copytree(zoo["armorm"].path, source)
    code = source / "armo_modeling.py"
    code.write_text(code.read_text().replace("score = torch.sum(", "score = 2 * torch.sum("))
    out = tmp_path / "bundle"
    assert main(["import", str(source), "--output-dir", str(out), "--trust-remote-code"]) == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd"]


def test_the_command_line_prints_what_it_imported(zoo: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from rewardserve.cli import main

    out = tmp_path / "prm"
    assert main(["import", str(zoo["prm"].path), "--output-dir", str(out), "--aggregate", "last"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["family"] == "process-reward" and result["scoring"]["head"] == "steps"
    assert result["scoring"]["outputs"] == 65 and read_card(out).head.aggregate == "last"


def test_remote_code_needs_the_flag(zoo: Any, tmp_path: Path) -> None:
    from rewardserve.cli import main

    with pytest.raises(BundleError, match=r"its own Python code .*--trust-remote-code"):
        import_model(str(zoo["internlm2"].path), tmp_path / "out")
    assert main(["import", str(zoo["armorm"].path), "--output-dir", str(tmp_path / "out")]) == 2
    assert not list(tmp_path.iterdir())


def test_sources_that_cannot_be_imported_say_what_to_do(tmp_path: Path) -> None:
    import transformers

    tok = fast(bpe(["<s>", "</s>"]), None, bos_token="<s>", eos_token="</s>")
    config = transformers.LlamaConfig(**SMALL, vocab_size=len(tok))
    causal = save(tmp_path / "causal", transformers.LlamaForCausalLM(config), tok)
    with pytest.raises(BundleError, match=r"LlamaForCausalLM is not a reward model.*rewardserve train"):
        import_model(str(causal), tmp_path / "a")
    config.num_labels = 3
    three = save(tmp_path / "three", transformers.LlamaForSequenceClassification(config), tok)
    with pytest.raises(BundleError, match=r"'score' head is 3, not a linear layer of 1 output"):
        import_model(str(three), tmp_path / "b")
    pickled = tmp_path / "pickled"
    shutil.copytree(three, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(BundleError, match=r"only pickle-format weights .*pytorch_model.bin.*safe_serialization"):
        import_model(str(pickled), tmp_path / "c")
    (pickled / "config.json").unlink()
    with pytest.raises(BundleError, match=r"has no config.json"):
        import_model(str(pickled), tmp_path / "d")
    with pytest.raises(BundleError, match=r"not a directory, nor a Hugging Face hub name"):
        import_model(str(tmp_path / "nowhere" / "x" / "y"), tmp_path / "e")
    tok.save_pretrained(tmp_path / "no-tag")
    with pytest.raises(BundleError, match=r"no step tag '<extra_0>'; name the model's with --step-token"):
        config.num_labels = 2
        save(tmp_path / "no-tag", transformers.LlamaForTokenClassification(config), tok)
        import_model(str(tmp_path / "no-tag"), tmp_path / "f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["causal", "no-tag", "pickled", "three"]


def test_an_existing_output_is_never_overwritten(zoo: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError, match=r"exists; remove it or choose another"):
        import_model(str(zoo["bert"].path), out)


def test_a_hub_name_resolves_through_the_cache_offline(zoo: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face cache's layout (blobs, a snapshot of symlinks, refs/main), filled by hand: nothing is
    downloaded; the snapshot's files are hard-linked (or copied) into the bundle, never rewritten."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-rm"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for path in zoo["qwen2"].path.iterdir():
        blob = repo / "blobs" / path.name
        shutil.copy(path, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    assert resolve_source("acme/tiny-rm") == snapshot
    card = import_model("acme/tiny-rm", tmp_path / "bundle")
    assert card.base_model == "acme/tiny-rm" and card.source["resolved"] == str(snapshot)
    weights = tmp_path / "bundle" / "model.safetensors"
    assert weights.read_bytes() == (repo / "blobs" / "model.safetensors").read_bytes()
    with pytest.raises(BundleError, match=r"the Hugging Face cache has no snapshot of it.*hf download acme/other"):
        resolve_source("acme/other")
    # serve's path: imported once into the home, then found again without importing
    home = tmp_path / "home"
    first = ensure_bundle("acme/tiny-rm", home)
    assert first.parent == home / "imported" and read_card(first).base_model == "acme/tiny-rm"
    stamp = (first / "reward_model.json").stat().st_mtime_ns
    assert ensure_bundle("acme/tiny-rm", home) == first
    assert (first / "reward_model.json").stat().st_mtime_ns == stamp
    assert ensure_bundle(str(tmp_path / "bundle"), home) == tmp_path / "bundle"  # a bundle is itself


def test_a_model_that_does_not_fit_is_refused_before_loading(zoo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import rewardmodel.torch_model as torch_model

    monkeypatch.setattr(torch_model, "free_bytes", lambda device: 1024)
    with pytest.raises(BundleError, match=r"needs about .* GiB on cpu in float32 and 0\.0 GiB are free"):
        load_torch_model(zoo.bundle("bert"))
