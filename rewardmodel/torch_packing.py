"""Packed scoring: a batch's items run as one sequence, so no padding is computed (docs/design.md §5).

A padded batch of a long and a short item spends the short item's padding in every projection and MLP; on a
GPU serving a large decoder that is most of the work when lengths vary (RL batches of 512-1,024 tokens waste
about a quarter). Packing concatenates the items' real tokens into one row ``(1, T)`` with each item's
positions restarting at 0, runs the body once, and reads each item's rows from the packed hidden states. The
head runs only on the rows it reads.

Attention must not cross items. The body's attention goes through transformers' attention interface, where
this module registers :data:`ATTENTION`: given ``cu_seq_lens_q`` (the items' offsets) it runs *varlen*
attention, each item attending to itself only, with the fastest kernel present:

* ``flash_attn``: ``flash_attn_varlen_func``, where the flash-attn package imports (CUDA, half precision);
* ``torch_varlen``: torch's own ``torch.nn.attention.varlen.varlen_attn`` (CUDA, half precision);
* ``padded_sdpa``: otherwise (CPU, fp32), the items are laid out padded *for attention only* and run through
  one SDPA call with a per-item mask; projections and MLPs stay packed. Attention is a few percent of a large
  model's FLOPs, so this keeps most of the gain, and it is what tests check on CPU.

Without ``cu_seq_lens_q`` the registered attention is plain SDPA, so a model switched to it scores padded
batches exactly as before. Torch's jagged nested tensors were tried and not used: their SDPA refuses causal
attention, which every decoder needs.

Which models pack (:func:`why_not_packable`): those whose attention goes through the interface
(``_supports_attention_backend``), without logit soft-capping or a sliding window shorter than the card's
``max_length``, read by a head this module can gather for: the card's explicit positions (linear, gated,
step heads), a decoder classifier's ``score`` or a BERT-style pooler and classifier. Others (DeBERTa's
disentangled attention, remote code) are scored padded.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from rewardmodel.batching import PaddedBatch

log = logging.getLogger(__name__)

ATTENTION = "rewardserve_packed"
"""The attention implementation packed models are switched to (SDPA when a call carries no offsets)."""

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, bool, float | None], torch.Tensor]
"""(q ``(T, Hq, D)``, k, v ``(T, Hkv, D)``, offsets ``(items+1,)`` int32, longest item, causal, scale) → like q."""


@dataclass(frozen=True)
class Packed:
    """A padded batch's real tokens as one sequence, on the model's device."""

    input_ids: torch.Tensor
    """``(1, T)``."""
    position_ids: torch.Tensor
    """``(1, T)``: each item's positions from 0."""
    token_type_ids: torch.Tensor | None
    offsets: torch.Tensor
    """``(items + 1,)`` int32: where each item starts in the sequence, then ``T``."""
    longest: int
    reads: torch.Tensor
    """``(items, k)``: the packed index of each position the head reads (-1: none)."""


def pack(batch: PaddedBatch, reads: npt.NDArray[np.int64], device: torch.device) -> Packed:
    """``batch`` packed, with ``reads`` (columns of the padded batch, -1: none) mapped into the sequence."""
    mask = batch.attention_mask.astype(bool)
    lengths = mask.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # a real column's place within its item: its position id (a read at a padding column, an all-pad item's, takes
    # its first token)
    rank = (np.cumsum(mask, axis=1) - 1).clip(min=0)
    rows = np.arange(len(lengths))[:, None]
    cols = reads.clip(min=0)
    packed_reads = np.where(reads >= 0, offsets[:-1, None] + rank[rows, cols], -1)
    types = batch.token_type_ids[mask][None] if batch.token_type_ids is not None else None

    def on(array: npt.NDArray[Any], dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device, dtype, non_blocking=True)

    return Packed(on(batch.input_ids[mask][None]), on(rank[mask][None]), None if types is None else on(types),
                  on(offsets, torch.int32), int(lengths.max()), on(packed_reads))


class _Layouts(threading.local):
    offsets: torch.Tensor | None = None
    layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


_layouts = _Layouts()
"""The last batch's layout, per thread: every layer of one forward shares it (computing it syncs a GPU)."""


def _layout(offsets: torch.Tensor, longest: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(item of each token, its column in the item, which keys each query may see ``(items, longest, longest)``)."""
    if _layouts.offsets is not offsets or _layouts.layout is None:
        lengths = offsets.diff().long()
        item = torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)
        col = torch.arange(int(offsets[-1]), device=offsets.device) - offsets[:-1].long()[item]
        order = torch.arange(longest, device=offsets.device)
        allowed = order[None, None, :] < lengths[:, None, None]  # keys inside the item; a padded query keeps one
        if causal:
            allowed = allowed & (order[None, None, :] <= order[None, :, None])
        _layouts.offsets, _layouts.layout = offsets, (item, col, allowed)
    return _layouts.layout


def padded_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int,
                causal: bool, scale: float | None) -> torch.Tensor:
    """Varlen attention on any device: the items laid out padded for one SDPA call, each attending to itself."""
    heads, dim = q.shape[1], q.shape[2]
    if k.shape[1] != heads:  # grouped-query attention: each key/value head serves heads // kv_heads query heads
        k, v = (t.repeat_interleave(heads // t.shape[1], dim=1) for t in (k, v))
    item, col, allowed = _layout(offsets, longest, causal)

    def laid_out(t: torch.Tensor) -> torch.Tensor:
        out = t.new_zeros(len(offsets) - 1, longest, heads, dim)
        out[item, col] = t
        return out.transpose(1, 2)  # (items, heads, longest, dim)

    out = torch.nn.functional.scaled_dot_product_attention(laid_out(q), laid_out(k), laid_out(v),
                                                           attn_mask=allowed[:, None], scale=scale)
    return out.transpose(1, 2)[item, col]


def _flash_attn() -> Kernel | None:
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None

    def kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int,
               causal: bool, scale: float | None) -> torch.Tensor:
        q, k, v = (t.contiguous() for t in (q, k, v))  # views of (1, heads, T, dim): the kernels want T outermost
        return flash_attn_varlen_func(q, k, v, offsets, offsets, longest, longest, softmax_scale=scale,
                                      causal=causal)

    return kernel


def _torch_varlen() -> Kernel | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters

    def kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, longest: int,
               causal: bool, scale: float | None) -> torch.Tensor:
        if k.shape[1] != q.shape[1] and "enable_gqa" not in params:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        q, k, v = (t.contiguous() for t in (q, k, v))
        extra: dict[str, Any] = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}
        if "window_size" in params:  # later releases say causal as a window; the first ones had is_causal
            extra["window_size"] = (-1, 0) if causal else (-1, -1)
        elif causal:
            extra["is_causal"] = True
        if "scale" in params:
            extra["scale"] = scale
        elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-6:
            raise NotImplementedError(f"this torch's varlen_attn takes no scale ({scale:g} asked)")
        out = varlen_attn(q, k, v, offsets, offsets, longest, longest, **extra)
        return out[0] if isinstance(out, tuple) else out

    return kernel


KERNELS: dict[str, Callable[[], Kernel | None]] = {"flash_attn": _flash_attn, "torch_varlen": _torch_varlen}
"""The fused varlen kernels (CUDA, half precision), fastest first."""


def kernels_for(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The kernels worth trying for a model on ``device`` in ``dtype``, fastest first; ``padded_sdpa`` always last."""
    fused = [name for name, find in KERNELS.items() if find() is not None] \
        if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) else []
    return [*fused, "padded_sdpa"]


class _Choice(threading.local):
    kernel: Kernel = staticmethod(padded_sdpa)  # type: ignore[assignment]


current_kernel = _Choice()
"""The kernel the calling thread's packed forward runs (set by :class:`PackedScorer` around each call)."""


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """:data:`ATTENTION`: varlen attention when the call carries ``cu_seq_lens_q``, else transformers' SDPA."""
    offsets = kwargs.get("cu_seq_lens_q")
    if offsets is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("softcap") is not None:
        raise NotImplementedError("packed attention has no logit soft-capping")
    window = kwargs.get("sliding_window")
    if window is not None and int(kwargs["max_length_q"]) > window:
        raise NotImplementedError(f"packed attention has no sliding window ({window} tokens, an item of "
                                  f"{int(kwargs['max_length_q'])})")
    # (1, heads, T, dim) → (T, heads, dim), what varlen kernels take; back as (1, T, heads, dim)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    causal = bool(kwargs["is_causal"] if kwargs.get("is_causal") is not None else getattr(module, "is_causal", False))
    out = current_kernel.kernel(q, k, v, offsets, int(kwargs["max_length_q"]), causal, scaling)
    return out.unsqueeze(0), None


def _no_mask(*args: Any, **kwargs: Any) -> Any:
    """The mask for :data:`ATTENTION`: none for a packed call (the offsets say it all), SDPA's otherwise."""
    if kwargs.get("attention_mask") is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, **kwargs)


_registered = False
_register_lock = threading.Lock()


def register() -> None:
    """Register :data:`ATTENTION` with transformers (once per process)."""
    global _registered
    with _register_lock:
        if not _registered:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface

            AttentionInterface.register(ATTENTION, packed_attention)
            AttentionMaskInterface.register(ATTENTION, _no_mask)
            _registered = True
