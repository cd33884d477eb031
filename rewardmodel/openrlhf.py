"""OpenRLHF's reward-model checkpoints, loaded the way OpenRLHF builds them — torch imported here.

OpenRLHF (``openrlhf.models.get_llm_for_sequence_regression``) saves a ``RewardModel`` class it creates at run
time: the base model's ``*PreTrainedModel`` with the base model under its ``base_model_prefix`` and a bias-free
``Linear(hidden, 1)`` head named by ``config.value_head_prefix`` (``score`` or ``value_head``). Its
``config.json`` says ``architectures: ["RewardModel"]``, so no transformers class loads it; loaded as a
``*ForSequenceClassification`` with pad = EOS, transformers would read the token before the final EOS.
:func:`openrlhf_class` rebuilds the same class from the config, so ``from_pretrained`` maps the saved weights
one to one; the head is then read at the last attention-mask position (the spec's ``last_mask``), as
OpenRLHF's forward reads it. ``config.mean``/``config.std`` become the card's normalization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rewardmodel.errors import BundleError

OPENRLHF_ARCHITECTURE = "RewardModel"


def value_head_prefix(config: Any) -> str:
    """The head's attribute: ``config.value_head_prefix``, else OpenRLHF's default ``score``."""
    return str(getattr(config, "value_head_prefix", None) or "score")


def openrlhf_class(config: Any) -> Any:
    """OpenRLHF's ``RewardModel`` class for ``config``'s base architecture (its ``_get_reward_model``)."""
    from transformers import AutoModel

    try:
        base_class: Any = AutoModel._model_mapping[type(config)]
    except KeyError:
        raise BundleError(f"an OpenRLHF checkpoint of model_type {config.model_type!r}, which transformers cannot "
                          "load as a base model") from None
    head = value_head_prefix(config)

    class RewardModel(base_class.__base__):  # type: ignore[misc,name-defined]
        """The base model plus a bias-free value head, as OpenRLHF saves it."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            setattr(self, self.base_model_prefix, base_class(config))
            setattr(self, head, torch.nn.Linear(config.hidden_size, 1, bias=False))
            self.post_init()

    return RewardModel


def load_openrlhf(root: Path, dtype: torch.dtype, **model_kwargs: Any) -> Any:
    """The OpenRLHF checkpoint in ``root`` (its weights mapped one to one; a missing one is refused)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(root)
    model, info = openrlhf_class(config).from_pretrained(root, config=config, use_safetensors=True, dtype=dtype,
                                                         output_loading_info=True, **model_kwargs)
    missing = list(info.get("missing_keys", []))
    if missing:
        raise BundleError(f"{root} lacks weights an OpenRLHF reward model has: {sorted(missing)[:5]}; is "
                          f"value_head_prefix ({value_head_prefix(config)!r}) the head it was saved with?")
    return model
