"""A :class:`~rewardmodel.torch_heads.ScoringModule` scoring packed batches (:mod:`rewardmodel.torch_packing`).

:class:`PackedScorer` takes the same padded batches as the module, strips their padding, runs the body once on
the packed sequence and the head only on the rows it reads. Whether a module can be packed is decided before
(:func:`why_not_packable`); whether it packs *right* is proven on its first batch, scored both ways (the
torch backend does this, and serves padded if they differ).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from rewardmodel.batching import PaddedBatch, edge_columns
from rewardmodel.torch_heads import ScoringModule, read_rows
from rewardmodel.torch_packing import (
    ATTENTION,
    KERNELS,
    Kernel,
    Packed,
    current_kernel,
    kernels_for,
    pack,
    padded_sdpa,
    register,
)


def _classifier_reader(module: ScoringModule) -> tuple[Any, str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """(body, which token, head on the read rows ``(items, H)``) of a ``*ForSequenceClassification`` this module
    knows, or None: a decoder's ``score`` at the last non-pad token, a BERT-style pooler and classifier at the
    first."""
    model = module.model
    body = getattr(model, "base_model", None)
    if body is None or body is model:
        return None
    score = getattr(model, "score", None)
    if isinstance(score, torch.nn.Linear):
        return body, "last", score
    pooler, classifier = getattr(body, "pooler", None), getattr(model, "classifier", None)
    if pooler is not None and isinstance(classifier, torch.nn.Linear):
        dropout = getattr(model, "dropout", torch.nn.Identity())
        return body, "first", lambda rows: classifier(dropout(pooler(rows[:, None])))
    return None


def why_not_packable(module: ScoringModule, max_length: int) -> str | None:
    """Why ``module`` cannot score packed batches of items up to ``max_length`` tokens (None: it can)."""
    model = module.model
    base = getattr(model, "base_model", model)
    if not getattr(type(base), "_supports_attention_backend", False):
        return f"{type(base).__name__}'s attention does not go through transformers' attention interface"
    if module.head.kind == "classifier" and _classifier_reader(module) is None:
        return f"its head ({type(model).__name__}) is not one packing reads (a decoder's score, a BERT pooler)"
    if getattr(module.config, "_attn_implementation", "sdpa") not in ("sdpa", ATTENTION):
        return f"it runs {module.config._attn_implementation} attention, not SDPA"
    if getattr(module.config, "attn_logit_softcapping", None) is not None:
        return "its attention soft-caps logits"
    windows = [w for m in model.modules() if (w := getattr(m, "sliding_window", None)) is not None]
    text = module.config.get_text_config() if hasattr(module.config, "get_text_config") else module.config
    layer_types = getattr(text, "layer_types", None) or []
    # Mistral reads its window off the config, not its modules; Qwen2 keeps one there that no layer uses
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True) and (
            not layer_types or "sliding_attention" in layer_types):
        windows.append(int(text.sliding_window))
    if windows and min(windows) < max_length:
        return f"its sliding window ({min(windows)} tokens) is shorter than the card's max_length ({max_length})"
    return None


class PackedScorer:
    """Scores padded batches packed, with ``module``'s head; see the module docstring."""

    def __init__(self, module: ScoringModule, kernel: str = "") -> None:
        register()
        self.module = module
        self._reader = _classifier_reader(module) if module.head.kind == "classifier" else None
        self._body = self._reader[0] if self._reader is not None else module.body
        self._pad = getattr(module.config, "pad_token_id", None)
        self._device = next(module.parameters()).device
        module.model.set_attn_implementation(ATTENTION)
        if module.model.config._attn_implementation != ATTENTION:  # some models only log that they cannot switch
            raise ValueError(f"{type(module.model).__name__} kept {module.model.config._attn_implementation} "
                             "attention")
        self.kernel, self._kernel = self._pick(kernel)

    def _pick(self, name: str) -> tuple[str, Kernel]:
        """The kernel named, else the first of :func:`kernels_for` this model's device and dtype."""
        param = next(self.module.parameters())
        name = name or kernels_for(param.device, param.dtype)[0]
        found = padded_sdpa if name == "padded_sdpa" else KERNELS[name]() if name in KERNELS else None
        if found is None:
            raise ValueError(f"no packed-attention kernel {name!r} here (have: "
                             f"{', '.join(kernels_for(torch.device('cuda'), torch.bfloat16))})")
        return name, found

    def _reads(self, batch: PaddedBatch) -> npt.NDArray[np.int64]:
        """The padded batch's columns the head reads ``(items, k)`` (-1: none)."""
        if self._reader is None:
            if batch.positions is None:
                raise ValueError(f"a {self.module.head.kind} head reads at explicit positions: the batch carries none")
            return batch.positions
        mask = batch.attention_mask.astype(bool)
        if self._reader[1] == "first":
            return edge_columns(mask, "first")[:, None]
        real = batch.input_ids != self._pad if self._pad is not None else mask
        # the last non-pad column, as transformers' argmax finds it (column 0 in a row of pads only)
        return edge_columns(real, "last").clip(min=0)[:, None]

    def _run(self, packed: Packed) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": packed.input_ids, "position_ids": packed.position_ids,
                                  "cu_seq_lens_q": packed.offsets, "cu_seq_lens_k": packed.offsets,
                                  "max_length_q": packed.longest, "max_length_k": packed.longest}
        if packed.token_type_ids is not None:
            kwargs["token_type_ids"] = packed.token_type_ids
        if self.module.no_cache:
            kwargs["use_cache"] = False
        current_kernel.kernel = self._kernel
        hidden = self._body(**kwargs)[0][0]  # (T, H)
        read = hidden[packed.reads.clamp(min=0)]  # (items, k, H)
        if self._reader is not None:
            return self.module.activate(self._reader[2](read[:, 0]))
        return self.module.head_on(read, packed.reads)

    def __call__(self, batch: PaddedBatch) -> torch.Tensor:
        """The output rows of ``batch`` ``(items, width)``, as the module's forward gives them."""
        with torch.inference_mode():
            return self._run(pack(batch, self._reads(batch), self._device))

    def with_rows(self, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(output rows, read rows ``(items, H)``), as the module's ``forward_with_rows`` gives them."""
        with torch.inference_mode():
            self.module.caught_rows()
            out = self._run(pack(batch, self._reads(batch), self._device))
            return out, read_rows(self.module.caught_rows())
