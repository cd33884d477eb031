"""Loading a bundle's torch model as its card's head says, and scoring with it — torch is imported only when called.

Training's evaluation, export's parity reference and ONNX graph, the import proof and the torch serving backend
all load bundles the same way: safetensors only (memory-mapped), ``trust_remote_code`` only where the operator
allows it and the card needs it, the card checked first, and a model that cannot fit the device refused before
any weight is read. The loaded checkpoint is wrapped in a :class:`ScoringModule` (built by
:func:`scoring_module`), whose ``forward(input_ids, attention_mask, token_type_ids, positions)`` returns the rows
the card's :class:`~rewardmodel.head.OutputLayout` describes: what the torch backend serves and what export
traces into ONNX.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rewardmodel.batching import PaddedBatch
from rewardmodel.card import BundleCard, read_card
from rewardmodel.errors import BundleError
from rewardmodel.head import OPENRLHF, HeadSpec
from rewardmodel.scoring import BatchScorer, RowScorer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MEMORY_HEADROOM = 1.2
"""A model needs about this many times its weights on the device (activations, allocator slack)."""


def load_torch_model(directory: str | Path, device: str = "cpu", dtype: torch.dtype | None = None,
                     trust_remote_code: bool = False, card: BundleCard | None = None,
                     **model_kwargs: Any) -> tuple[Any, BundleCard]:
    """(:class:`ScoringModule` in eval mode, card) for a bundle; the card is read and its file hashes verified
    first (unless given). ``model_kwargs`` go to ``from_pretrained`` (e.g. ``attn_implementation``)."""
    import torch

    card = card or read_card(directory)
    dtype = dtype or torch.float32
    model = load_checkpoint(Path(directory), card.head, device, dtype, trust_remote_code, **model_kwargs)
    return scoring_module(model, card).eval(), card


def load_checkpoint(root: Path, head: HeadSpec, device: str, dtype: torch.dtype, trust_remote_code: bool,
                    **model_kwargs: Any) -> Any:
    """The checkpoint in ``root`` loaded by the class ``head`` names, on ``device`` in ``dtype``."""
    if head.trust_remote_code and not trust_remote_code:
        raise BundleError(f"{root} runs its own Python code ({head.auto_class} from its auto_map): allow it with "
                          "--trust-remote-code, having read the code")
    check_fits(root, device, dtype)
    if head.auto_class == OPENRLHF:
        from rewardmodel.openrlhf import load_openrlhf

        model = load_openrlhf(root, dtype, **model_kwargs)
    else:
        import transformers

        auto = getattr(transformers, head.auto_class, None)
        if auto is None:
            raise BundleError(f"transformers has no {head.auto_class}; upgrade transformers")
        model = auto.from_pretrained(root, use_safetensors=True, dtype=dtype, trust_remote_code=trust_remote_code,
                                     **model_kwargs)
    return model.to(device)


def weight_bytes(root: Path, dtype: torch.dtype) -> int:
    """Bytes the checkpoint's weights take in ``dtype`` (from the safetensors headers; nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(root.glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            for name in fh.keys():
                sliced = fh.get_slice(name)
                total += int(np.prod(sliced.get_shape())) * dtype.itemsize
    return total


def free_bytes(device: str) -> int:
    """Memory free for a model on ``device`` (0: unknown)."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_fits(root: Path, device: str, dtype: torch.dtype) -> None:
    """Refuse, before loading, a model whose weights cannot fit ``device``."""
    need = int(weight_bytes(root, dtype) * MEMORY_HEADROOM)
    have = free_bytes(device)
    if have and need > have:
        kind = str(dtype).removeprefix("torch.")
        raise BundleError(f"{root} needs about {need / 2**30:.1f} GiB on {device} in {kind} and "
                          f"{have / 2**30:.1f} GiB are free: serve it on a larger device, in bf16/fp16 on a GPU "
                          "(--variant), or free memory")


def scoring_module(model: Any, card: BundleCard) -> Any:
    """``model`` wrapped to score as the card's head says (see :class:`ScoringModule`)."""
    from rewardmodel.torch_heads import ScoringModule

    return ScoringModule(model, card.head)


def torch_scorer(model: Any) -> BatchScorer:
    """A :data:`~rewardmodel.scoring.BatchScorer` running ``model`` on its own device, without gradients: a
    :class:`ScoringModule`, or a transformers classifier being trained (its logits)."""
    import torch

    device = next(model.parameters()).device

    def score(batch: PaddedBatch) -> npt.NDArray[np.float32]:
        inputs = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.as_dict().items()}
        with torch.inference_mode():
            out = model(**inputs)
            return getattr(out, "logits", out).float().cpu().numpy()

    return score


def torch_row_scorer(module: Any) -> RowScorer:
    """A :data:`~rewardmodel.scoring.RowScorer` over a :class:`ScoringModule`: its outputs and read rows."""
    import torch

    device = next(module.parameters()).device
    if (why := module.why_no_rows()) is not None:
        raise BundleError(why)

    def score(batch: PaddedBatch) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        inputs = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.as_dict().items()}
        with torch.inference_mode():
            out, rows = module.forward_with_rows(**inputs)
            return out.float().cpu().numpy(), rows.float().cpu().numpy()

    return score
