"""Loading a base checkpoint as a scalar-head reward model, and reading/writing bundles.

This is where transformers' conventions are translated into the card's explicit formatting record:
encoder or decoder, which token the score is read from, the pad token (decoders that have none, or
whose pad equals EOS, get a dedicated one), the template and the padding side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from tokenizers import Tokenizer
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from rewardmodel import BundleCard, BundleError, FormatSpec, Formatter, SpecialToken, load_tokenizer
from rewardmodel.formatting import Template, unpadded
from rewardmodel.torch_model import load_torch_model

log = logging.getLogger(__name__)
Arch = Literal["encoder", "decoder"]

PAD_TOKEN = "<|rewardserve_pad|>"
"""Pad token added to decoders that have none (or whose pad is EOS); it never occurs in real text."""


@dataclass
class LoadedModel:
    """A reward model with the formatter that feeds it."""

    model: Any
    """A transformers ``PreTrainedModel`` (a peft ``PeftModel`` while LoRA trains)."""
    formatter: Formatter
    architecture: Literal["encoder", "decoder"]
    tokenizer: PreTrainedTokenizerBase | None = None


def detect_architecture(model_type: str) -> Arch:
    """Encoders are the model types transformers can load as masked LMs (BERT, RoBERTa, DeBERTa, …)."""
    return "encoder" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def _special(tokenizer: PreTrainedTokenizerBase, name: str) -> SpecialToken | None:
    token = getattr(tokenizer, name)
    if token is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(str(token))
    assert isinstance(token_id, int)
    return SpecialToken(str(token), token_id)


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, architecture: str) -> bool:
    """Give the tokenizer a usable pad token; True when one was added (embeddings must grow)."""
    if architecture == "encoder":
        if tokenizer.pad_token is None:
            raise BundleError("this encoder's tokenizer has no pad token; set one in its tokenizer_config.json")
        return False
    if tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token:
        return False
    # pad == EOS would make transformers read each score one token before the EOS we append.
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return True


def build_format_spec(
    tokenizer: PreTrainedTokenizerBase, architecture: Literal["encoder", "decoder"], max_length: int,
    padding_side: str = "auto",
) -> FormatSpec:
    """The formatting record for a tokenizer/architecture; every choice explicit."""
    chat = architecture == "decoder" and bool(getattr(tokenizer, "chat_template", None))
    template: Template = "pair" if architecture == "encoder" else ("chat" if chat else "concat")
    side = "right" if architecture == "encoder" else tokenizer.padding_side
    if padding_side != "auto":
        side = padding_side
    if side not in ("left", "right"):
        raise BundleError(f"padding side must be 'left' or 'right', got {side!r}")
    eos = _special(tokenizer, "eos_token")
    pad = _special(tokenizer, "pad_token")
    assert pad is not None
    names = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token")
    return FormatSpec(
        template=template,
        max_length=max_length,
        score_position="first" if architecture == "encoder" else "last",
        padding_side=cast(Literal["left", "right"], side),
        pad_token=pad,
        eos_token=eos,
        bos_token=_special(tokenizer, "bos_token"),
        suffix_ids=(eos.id,) if template == "concat" and eos is not None else (),
        bos="tokenizer" if template == "concat" else "template",
        use_token_type_ids="token_type_ids" in tokenizer.model_input_names,
        chat_template=tokenizer.chat_template if chat else None,
        special_tokens={n: str(getattr(tokenizer, n)) for n in names if getattr(tokenizer, n) is not None},
    )


def load_base_model(
    name_or_path: str, architecture: str = "auto", max_length: int = 512, padding_side: str = "auto",
    trust_remote_code: bool = False, num_labels: int = 1,
) -> LoadedModel:
    """Load a base checkpoint with a fresh head of ``num_labels`` outputs (or a reward model to fine-tune
    further): one, the reward, or one per criterion."""
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if architecture not in ("auto", "encoder", "decoder"):
        raise BundleError(f"architecture must be auto, encoder or decoder, got {architecture!r}")
    arch = detect_architecture(config.model_type) if architecture == "auto" else cast(Arch, architecture)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    added = _ensure_pad_token(tokenizer, arch)
    config.num_labels = num_labels
    # transformers reports the new head's weights as missing from the checkpoint, which is the point of
    # loading a base model here; we report what was initialized ourselves, warning only beyond the head
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, use_safetensors=True, trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(previous)
    _report_new_weights(list(info.get("missing_keys", [])), name_or_path)
    # An added pad token (ours, or one a tokenizer class adds by default) lies outside the embedding
    # table until it grows; set the pad id only after, since embeddings validate it.
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
        log.info("tokenizer has %d tokens: resized the embeddings", len(tokenizer))
    if added:
        log.info("added pad token %s (id %d)", PAD_TOKEN, tokenizer.pad_token_id)
    model.config.pad_token_id = tokenizer.pad_token_id
    limit = getattr(config, "max_position_embeddings", None) or max_length
    spec = build_format_spec(tokenizer, arch, min(max_length, int(limit)), padding_side)
    backend = unpadded(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()))  # a copy, not the HF tokenizer's
    return LoadedModel(model, Formatter(backend, spec), arch, tokenizer)


HEAD_MODULES = ("score", "classifier")
"""Where transformers' sequence-classification models keep their head."""


def _report_new_weights(missing: list[str], source: str) -> None:
    head = [k for k in missing if k.split(".")[0] in HEAD_MODULES]
    other = [k for k in missing if k not in head]
    if head:
        log.info("new score head %s initialized at random (trained next)", ", ".join(sorted(head)))
    if other:
        log.warning("%s lacks %d weights beyond the score head, initialized at random: %s", source, len(other),
                    ", ".join(sorted(other)[:10]))


def hide_progress_bars() -> None:
    """No tqdm bars from transformers (its "Loading weights" bar among them): for ``--quiet`` runs."""
    hf_logging.disable_progress_bar()


def save_bundle_weights(loaded: LoadedModel, output_dir: str | Path) -> None:
    """Write the checkpoint part of a bundle (safetensors weights, config, tokenizer)."""
    assert loaded.tokenizer is not None
    loaded.model.save_pretrained(output_dir, safe_serialization=True)
    loaded.tokenizer.save_pretrained(output_dir)


def load_bundle(directory: str | Path, device: str = "cpu", trust_remote_code: bool = False
                ) -> tuple[LoadedModel, BundleCard]:
    """Load a bundle's torch model and formatter; refuses bundles whose card is missing or stale."""
    model, card = load_torch_model(directory, device=device, trust_remote_code=trust_remote_code)
    return LoadedModel(model, Formatter(load_tokenizer(directory), card.formatting), card.architecture), card


def model_kwargs(batch: dict[str, Any]) -> dict[str, Any]:
    """The subset of a collated batch that the model's forward takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
